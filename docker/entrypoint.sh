#!/bin/sh
# `migrate` waits for the database and upgrades it; anything else is an `unlearn` command.
set -e
if [ "$1" = "migrate" ]; then
    for attempt in $(seq 1 30); do
        if unlearn db upgrade; then exit 0; fi
        echo "database not ready (attempt $attempt), retrying" >&2
        sleep 2
    done
    exit 1
fi
exec unlearn "$@"
