#!/bin/sh
# The entrypoint of both images.
#   migrate        wait for the database and upgrade it to head (compose's one-shot service)
#   healthcheck    the image HEALTHCHECK, by the role of this container's main process (PID 1):
#                  `serve` asks /healthz, `worker` pings its own Celery node, others pass
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
        *" serve "*)
            exec python -c 'import os, sys, urllib.request
url = "http://127.0.0.1:%s/healthz" % os.environ.get("UNLEARN_PORT", "8000")
timeout = float(os.environ["HEALTHCHECK_TIMEOUT_S"])
sys.exit(urllib.request.urlopen(url, timeout=timeout).status != 200)'
            ;;
        *" worker "*)
            # Celery names the node celery@<hostname>; a solo pool answers between tasks only.
            exec python -c 'import os, socket, sys
from workers.app import app
node = "celery@" + socket.gethostname()
timeout = float(os.environ["HEALTHCHECK_TIMEOUT_S"])
sys.exit(not app.control.ping(destination=[node], timeout=timeout))'
            ;;
    esac
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
