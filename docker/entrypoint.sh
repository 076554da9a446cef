#!/bin/sh
# The entrypoint of both images.
#   migrate        wait for the database and upgrade it to head (compose's one-shot service)
#   healthcheck    the image HEALTHCHECK, by the role of this container's main process (PID 1):
#                  `serve` asks its /healthz on UNLEARN_PORT; `worker` and `housekeeper` ask
#                  theirs on UNLEARN_HEALTH_PORT (a thread: it answers while a job runs, and
#                  fails once the heartbeat stops reaching the database); others pass
#   a program      runs as is (`sh`, `celery ...`, `python ...`)
#   anything else  is an `unlearn` command: `serve`, `worker --queues deletions`, `db upgrade`
# HEALTHCHECK_TIMEOUT_S bounds each check (default 10); HEALTHCHECK_PID names the main process.
set -eu

migrate() {
    attempts=${UNLEARN_MIGRATE_ATTEMPTS:-30}
    attempt=1
    until unlearn db upgrade; do
        if [ "$attempt" -ge "$attempts" ]; then
            echo "migrate: the database is still unreachable after $attempt attempts" >&2
            exit 1
        fi
        echo "migrate: database not ready (attempt $attempt of $attempts), retrying" >&2
        attempt=$((attempt + 1))
        sleep 2
    done
}

healthcheck() {
    export HEALTHCHECK_TIMEOUT_S="${HEALTHCHECK_TIMEOUT_S:-10}"
    role=" $(tr '\0' ' ' <"/proc/${HEALTHCHECK_PID:-1}/cmdline") "
    case "$role" in
        *" serve "*) port="${UNLEARN_PORT:-8000}" ;;
        *" worker "* | *" housekeeper "*) port="${UNLEARN_HEALTH_PORT:-8001}" ;;
        *) return 0 ;;
    esac
    export HEALTHCHECK_PORT="$port"
    exec python -c 'import os, sys, urllib.request
url = "http://127.0.0.1:%s/healthz" % os.environ["HEALTHCHECK_PORT"]
try:
    urllib.request.urlopen(url, timeout=float(os.environ["HEALTHCHECK_TIMEOUT_S"]))
except OSError as error:  # refused, timed out, or an HTTP error status (503: failing)
    sys.exit("unhealthy: %s" % error)'
}

[ "$#" -gt 0 ] || set -- serve
case "$1" in
    migrate) migrate ;;
    healthcheck) healthcheck ;;
    -*) exec unlearn "$@" ;;
    *)
        if command -v "$1" >/dev/null 2>&1; then
            exec "$@"
        fi
        exec unlearn "$@"
        ;;
esac
