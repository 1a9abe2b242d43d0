#!/bin/sh
# Keyward's container entrypoint: the first argument names the process, the rest are
# passed on to it.
#
#   web        the API, granian WSGI on :8000 (settings.wsgi:application)
#   proxy      the proxy, granian ASGI on :8001 (settings.asgi:application)
#   worker     a Celery worker
#   beat       Celery beat (run exactly one)
#   sequencer  the audit sequencer (manage.py audit_sequencer)
#   migrate    manage.py migrate; run it with the migration role's KEYWARD_DATABASE_URL and
#              with KEYWARD_DB_APP_ROLE naming the application role it grants privileges to
#   manage     any manage.py command: `manage audit_verify`
#   anything else is taken as a manage.py command: `create_admin alice --role auditor`
set -eu

# Celery beat keeps its schedule file in the data directory; it lives under /tmp.
mkdir -p "${KEYWARD_DATA_DIR:-/tmp/keyward}"

command="${1:-web}"
[ "$#" -gt 0 ] && shift

# A long-running process starts with no metrics sample files of an earlier run (see the
# README: Operations > Metrics); each container has its own /tmp.
case "$command" in
    web|proxy|worker|beat|sequencer)
        metrics_dir="${KEYWARD_METRICS_DIR:-${KEYWARD_DATA_DIR:-/tmp/keyward}/metrics}"
        mkdir -p "$metrics_dir"
        rm -f "$metrics_dir"/*.db
        ;;
esac

case "$command" in
    web)
        exec python -m granian --interface wsgi --host 0.0.0.0 --port 8000 --no-ws \
            "$@" settings.wsgi:application
        ;;
    proxy)
        exec python -m granian --interface asgi --host 0.0.0.0 --port 8001 --no-ws \
            "$@" settings.asgi:application
        ;;
    worker)
        exec python -m celery -A settings.celery worker --loglevel INFO \
            --without-gossip --without-mingle "$@"
        ;;
    beat)
        exec python -m celery -A settings.celery beat --loglevel INFO "$@"
        ;;
    sequencer)
        exec python manage.py audit_sequencer "$@"
        ;;
    migrate)
        exec python manage.py migrate --noinput "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    *)
        exec python manage.py "$command" "$@"
        ;;
esac
