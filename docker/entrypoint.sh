#!/bin/sh
# The Gateway image's entrypoint: one role per container of the compose lab (docker/compose.yaml).
#
#   entrypoint.sh gateway [ARGS]   gateway run on every interface, admin API over TLS (--admin-tls auto),
#                                  trusting the lab origin's CA and loading the demo policies when
#                                  $GATEWAY_LAB_DIR has them (GATEWAY_WAIT_FOR_ORIGIN=1: wait for them);
#                                  extra ARGS go to `gateway run`
#   entrypoint.sh origin           the demo sites of `gateway demo` (docker/lab_origin.py)
#   entrypoint.sh client           a demo device: enrolls with a token made with $GATEWAY_ADMIN_TOKEN,
#                                  then runs the agent and its local proxy (every interface)
#   entrypoint.sh --check          print what the gateway role would run, and check `gateway` is there
#   entrypoint.sh PROGRAM ...      anything else: run as given (e.g. `gateway token create --data-dir /data`)
#
# Every address and directory comes from the environment (defaults for the image), so the script
# also runs outside a container (tests/test_docker.py starts it on loopback with temp directories).
set -eu

DATA_DIR="${GATEWAY_DATA_DIR:-/data}"
LAB_DIR="${GATEWAY_LAB_DIR:-/lab}"
PROXY_LISTEN="${GATEWAY_PROXY_LISTEN:-0.0.0.0:8080}"
ADMIN_LISTEN="${GATEWAY_ADMIN_LISTEN:-0.0.0.0:8081}"
ORIGIN_LISTEN="${GATEWAY_ORIGIN_LISTEN:-0.0.0.0:443}"
ADMIN_URL="${GATEWAY_SERVER:-https://gateway:8081}"
GATEWAY_PROXY="${GATEWAY_PROXY:-gateway:8080}"
CLIENT_LISTEN="${GATEWAY_CLIENT_LISTEN:-0.0.0.0:3128}"
DEVICE_EMAIL="${GATEWAY_DEVICE_EMAIL:-trainer@demo.test}"
WAIT_SECONDS="${GATEWAY_WAIT_SECONDS:-120}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"

say() { echo "entrypoint: $*" >&2; }

wait_for_file() {  # FILE: wait until it exists, at most $WAIT_SECONDS
    waited=0
    while [ ! -s "$1" ]; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            say "gave up after ${WAIT_SECONDS}s waiting for $1"
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

gateway_args() {
    set -- run --data-dir "$DATA_DIR" --proxy-listen "$PROXY_LISTEN" --admin-listen "$ADMIN_LISTEN" --admin-tls auto
    if [ -s "$LAB_DIR/origin-ca.pem" ]; then
        set -- "$@" --upstream-ca "$LAB_DIR/origin-ca.pem"
    fi
    if [ -s "$LAB_DIR/demo.yaml" ]; then
        set -- "$@" --policies "$LAB_DIR/demo.yaml"
    fi
    printf '%s\n' "$@"
}

# Run "$@" in the background, forward SIGTERM/SIGINT to it, and exit with its status.
child=""
forward() { [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; }
trap forward TERM INT

role_gateway() {
    if [ "${GATEWAY_WAIT_FOR_ORIGIN:-0}" = 1 ]; then
        wait_for_file "$LAB_DIR/origin-ca.pem"
    fi
    mkdir -p "$DATA_DIR"
    # shellcheck disable=SC2046  # one argument per line, none with spaces in the image
    set -- $(gateway_args) "$@"
    gateway "$@" &
    child=$!
    # The admin API's own certificate, for the client container (and the host: docker cp).
    if [ -d "$LAB_DIR" ] && [ -w "$LAB_DIR" ]; then
        (wait_for_file "$DATA_DIR/admin-tls.crt" && cp "$DATA_DIR/admin-tls.crt" "$LAB_DIR/admin-tls.crt.tmp" \
            && mv "$LAB_DIR/admin-tls.crt.tmp" "$LAB_DIR/admin-tls.crt") &
    fi
    status=0
    wait "$child" || status=$?
    if [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; then  # wait was interrupted by a signal
        status=0
        wait "$child" || status=$?
    fi
    exit "$status"
}

role_client() {
    wait_for_file "$LAB_DIR/admin-tls.crt"
    : "${GATEWAY_ADMIN_TOKEN:?the client needs GATEWAY_ADMIN_TOKEN to make its enrollment token}"
    export HOME="${HOME:-/tmp}"
    state="$DATA_DIR/agent-state.json"
    mkdir -p "$DATA_DIR"
    if [ ! -s "$state" ]; then
        token="$(gateway device token --email "$DEVICE_EMAIL" --server "$ADMIN_URL" --cacert "$LAB_DIR/admin-tls.crt")"
        gateway agent enroll --token "$token" --server "$ADMIN_URL" --email "$DEVICE_EMAIL" --state "$state"
    fi
    gateway agent run --state "$state" &
    agent=$!
    gateway agent proxy --state "$state" --listen "$CLIENT_LISTEN" --allow-remote --upstream "$GATEWAY_PROXY" &
    child=$!
    status=0
    wait "$child" || status=$?
    kill -TERM "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    exit "$status"
}

role="${1:-gateway}"
[ $# -gt 0 ] && shift
case "$role" in
    gateway) role_gateway "$@" ;;
    origin) exec "$PYTHON" "$HERE/lab_origin.py" "$LAB_DIR" "$ORIGIN_LISTEN" ;;
    client) role_client ;;
    --check)
        command -v gateway >/dev/null || { say "no gateway program on PATH"; exit 1; }
        say "gateway $(gateway_args | tr '\n' ' ')"
        gateway run --help >/dev/null
        say "ok"
        ;;
    *) exec "$role" "$@" ;;
esac
