#!/usr/bin/env bash
#
# Runs Herald locally, without Docker, and shows one webhook delivered:
#
#   bash deploy/local/run.sh [--release] [--keep]
#
# 1. installs what is missing (Debian packages, rustup), only if missing;
# 2. starts PostgreSQL and RabbitMQ if they are not answering (else reuses them)
#    and creates the database "herald";
# 3. builds herald-ingest, herald-sender, herald-console and the herald CLI;
# 4. starts a demo receiver (127.0.0.1:9000, fails its first request),
#    herald-ingest (127.0.0.1:50051) and herald-sender (short retry schedule
#    1s,2s,4s, queue prefix herald-demo), and Herald Console, the web UI
#    (http://127.0.0.1:8080; sign in with the admin key it prints);
# 5. creates a webhook for order.created (tenant local-demo), fires an event,
#    waits until the delivery succeeded and prints it: through the API and as
#    the raw rows in Postgres.
#
# Everything it started is stopped on exit, unless --keep is given (then the
# console stays up to look at the delivery in a browser).
# Environment: HERALD_DATABASE_URL, HERALD_AMQP_URL and PGPASSWORD override the
# local defaults; HERALD_ADMIN_KEY sets the bootstrap admin key (default: one
# made up per run); RUST_LOG sets the services' log filter (default info).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=deploy/local/services.sh
source "$HERE/services.sh"

PROFILE=debug
KEEP=0
for arg in "$@"; do
    case "$arg" in
    --release) PROFILE=release ;;
    --keep) KEEP=1 ;;
    -h | --help)
        sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) herald_die "unknown option $arg (use --release, --keep or --help)" ;;
    esac
done
cd "$ROOT"

TENANT=local-demo
EVENT=order.created
GRPC_PORT=50051
RECEIVER_PORT=9000
CONSOLE_PORT=8080
DATA='{"order_id":42,"customer":{"email":"a@example.com"}}'

# --- 1. what is installed ----------------------------------------------------
herald_log "checking what is installed"
need=()
herald_have_postgres || need+=(postgresql)
herald_have_rabbitmq || need+=(rabbitmq-server)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl)
INSTALLED_POSTGRES=0
if [ "${#need[@]}" -gt 0 ]; then
    case " ${need[*]} " in *" postgresql "*) INSTALLED_POSTGRES=1 ;; esac
    herald_apt_install "${need[@]}" ca-certificates
fi
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        PATH="$HOME/.cargo/bin:$PATH"
    else
        herald_log "installing Rust with rustup (no cargo found)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

# --- 2. PostgreSQL and RabbitMQ ----------------------------------------------
herald_ensure_postgres
herald_ensure_rabbitmq

pg_login() { herald_psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; }
if ! pg_login; then
    # Debian's own configuration asks for a password over TCP.
    if [ -z "${PGPASSWORD:-}" ]; then
        export PGPASSWORD=herald-local
    fi
    if ! pg_login; then
        if [ "$INSTALLED_POSTGRES" -eq 1 ]; then
            herald_log "setting a password for the postgres user of the PostgreSQL just installed"
            herald_as_root runuser -u postgres -- psql -qc "alter user postgres password '$PGPASSWORD'"
        fi
        pg_login || herald_die "cannot log in to PostgreSQL on 127.0.0.1 as postgres; set PGPASSWORD (and HERALD_DATABASE_URL), or allow trust for 127.0.0.1 in pg_hba.conf"
    fi
fi
herald_ensure_database herald

if [ -n "${PGPASSWORD:-}" ]; then
    default_db_url="postgres://postgres:${PGPASSWORD}@127.0.0.1:5432/herald"
else
    default_db_url="postgres://postgres@127.0.0.1:5432/herald"
fi
export HERALD_DATABASE_URL="${HERALD_DATABASE_URL:-$default_db_url}"
export HERALD_AMQP_URL="${HERALD_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export HERALD_QUEUE_PREFIX=herald-demo
export HERALD_SCHEDULE=1s,2s,4s
# The demo receiver listens on plain HTTP on loopback: allow both for this
# demo only (production keeps HTTPS-only and the SSRF guard's defaults).
export HERALD_ALLOW_HTTP=true
export HERALD_SSRF_ALLOW=127.0.0.0/8
export HERALD_LISTEN="127.0.0.1:$GRPC_PORT"
export HERALD_SERVER="http://127.0.0.1:$GRPC_PORT"
# API keys are required (the default). This demo gives ingest a bootstrap
# admin key made up for this run and hands the same key to the CLI.
if [ -z "${HERALD_ADMIN_KEY:-}" ]; then
    HERALD_ADMIN_KEY="dev-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
export HERALD_ADMIN_KEY
export HERALD_TOKEN="$HERALD_ADMIN_KEY"
# Herald Console talks only to ingest's gRPC port; people sign in with an API
# key (this run's admin key, or one made with `herald keys create`).
export HERALD_CONSOLE_LISTEN="127.0.0.1:$CONSOLE_PORT"
export HERALD_CONSOLE_INGEST_URL="$HERALD_SERVER"
CONSOLE_URL="http://127.0.0.1:$CONSOLE_PORT"
export RUST_LOG="${RUST_LOG:-info}"

# --- 3. build ----------------------------------------------------------------
build_flags=()
[ "$PROFILE" = release ] && build_flags+=(--release)
herald_log "cargo build ${build_flags[*]} -p herald-ingest -p herald-sender -p herald-cli -p herald-console"
cargo build "${build_flags[@]}" -p herald-ingest -p herald-sender -p herald-cli -p herald-console
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
HERALD="$BIN/herald"
for b in herald herald-ingest herald-sender herald-console; do
    [ -x "$BIN/$b" ] || herald_die "$BIN/$b was not built"
done

# --- 4. start the processes --------------------------------------------------
for port in "$GRPC_PORT" "$RECEIVER_PORT" "$CONSOLE_PORT"; do
    if herald_port_open "$port"; then
        herald_die "port $port on 127.0.0.1 is already in use (an earlier run with --keep?); stop that process first"
    fi
done

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/herald-demo.XXXXXX")
PIDS=()
NAMES=()

stop_all() {
    local status=$?
    if [ "${#PIDS[@]}" -eq 0 ]; then
        return "$status"
    fi
    if [ "$KEEP" -eq 1 ]; then
        herald_log "--keep: still running: ${NAMES[*]} (pids ${PIDS[*]}); stop them with: kill ${PIDS[*]}"
        herald_log "logs: $LOG_DIR"
        return "$status"
    fi
    herald_log "stopping ${NAMES[*]}"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    local i
    for i in $(seq 1 20); do
        kill -0 "${PIDS[@]}" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    herald_log "logs are kept in $LOG_DIR"
    return "$status"
}
trap stop_all EXIT

# start NAME COMMAND...: runs COMMAND in the background, output to NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$LOG_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    herald_log "started $name (pid $!), log: $LOG_DIR/$name.log"
}

# Fails with the tail of a process's log when it is no longer running.
check_alive() {
    local name=$1 pid=$2
    if ! kill -0 "$pid" 2>/dev/null; then
        printf -- '--- last lines of %s ---\n' "$LOG_DIR/$name.log" >&2
        tail -n 30 "$LOG_DIR/$name.log" >&2 || true
        herald_die "$name exited; see its log above"
    fi
}

# wait_port NAME PID PORT: waits up to 60 s for the port to accept connections.
wait_port() {
    local name=$1 pid=$2 port=$3 i
    for i in $(seq 1 120); do
        check_alive "$name" "$pid"
        herald_port_open "$port" && return 0
        sleep 0.5
    done
    herald_die "$name does not answer on 127.0.0.1:$port after 60 s; see $LOG_DIR/$name.log"
}

herald_log "running migrations (herald-ingest migrate)"
if ! "$BIN/herald-ingest" migrate >"$LOG_DIR/migrate.log" 2>&1; then
    cat "$LOG_DIR/migrate.log" >&2
    herald_die "herald-ingest migrate failed"
fi

start receiver "$HERALD" receive --listen "127.0.0.1:$RECEIVER_PORT" --fail-first 1
RECEIVER_PID=${PIDS[-1]}
start ingest "$BIN/herald-ingest" serve
INGEST_PID=${PIDS[-1]}
start sender "$BIN/herald-sender" serve
SENDER_PID=${PIDS[-1]}
# The console gets none of the credentials exported above: it acts through
# ingest with the API key of whoever signs in.
start console env -u HERALD_DATABASE_URL -u HERALD_AMQP_URL -u HERALD_ADMIN_KEY \
    -u HERALD_TOKEN -u PGPASSWORD "$BIN/herald-console"
CONSOLE_PID=${PIDS[-1]}

wait_port receiver "$RECEIVER_PID" "$RECEIVER_PORT"
wait_port ingest "$INGEST_PID" "$GRPC_PORT"
wait_port console "$CONSOLE_PID" "$CONSOLE_PORT"
curl -fsS -o /dev/null "$CONSOLE_URL/healthz" ||
    herald_die "Herald Console does not answer $CONSOLE_URL/healthz; see $LOG_DIR/console.log"
sleep 1
check_alive sender "$SENDER_PID"
herald_log "all running: gRPC API on $HERALD_SERVER, receiver on http://127.0.0.1:$RECEIVER_PORT, console on $CONSOLE_URL"
herald_log "Herald Console: $CONSOLE_URL — sign in with the admin key $HERALD_ADMIN_KEY"

# --- 5. a webhook, an event, a delivery ---------------------------------------
# Webhooks of earlier runs would each get a delivery too: remove them.
old_ids=$("$HERALD" webhooks list --tenant "$TENANT" --event "$EVENT" 2>/dev/null | awk 'NR > 1 { print $1 }') || old_ids=""
for id in $old_ids; do
    "$HERALD" webhooks delete "$id" >/dev/null
    herald_log "deleted webhook $id of an earlier run"
done

herald_log "creating a webhook: $EVENT (tenant $TENANT) -> POST http://127.0.0.1:$RECEIVER_PORT/hooks/orders"
"$HERALD" webhooks create --tenant "$TENANT" --event "$EVENT" \
    --method POST --url "http://127.0.0.1:$RECEIVER_PORT/hooks/orders" \
    --header "X-Demo: deploy/local/run.sh" \
    --description "local demo (deploy/local/run.sh)"

herald_log "firing $EVENT with $DATA"
DELIVERY_ID=$("$HERALD" fire "$EVENT" --tenant "$TENANT" --json "$DATA" | head -n 1)
[ -n "$DELIVERY_ID" ] || herald_die "herald fire returned no delivery id"
herald_log "delivery $DELIVERY_ID; waiting for it to succeed (the receiver fails the first attempt)"

state=""
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
    state=$("$HERALD" --json delivery "$DELIVERY_ID" 2>/dev/null |
        sed -n 's/^  "state": "\([a-z]*\)",\{0,1\}$/\1/p') || state=""
    case "$state" in
    succeeded | failed | cancelled) break ;;
    esac
    sleep 0.5
done

echo
herald_log "herald delivery $DELIVERY_ID"
"$HERALD" delivery "$DELIVERY_ID" || true
echo
herald_log "the rows in Postgres"
herald_psql -d herald -x -c "select * from deliveries where id = '$DELIVERY_ID'" || true
herald_psql -d herald -c "select * from delivery_attempts where delivery_id = '$DELIVERY_ID' order by attempt" || true
echo
herald_log "what the receiver got ($LOG_DIR/receiver.log):"
cat "$LOG_DIR/receiver.log"
herald_log "logs: $LOG_DIR/{ingest,sender,console,receiver,migrate}.log"

case "$state" in
succeeded) herald_log "done: the delivery succeeded" ;;
pending | "") herald_die "delivery $DELIVERY_ID did not finish within 30 s; see the logs in $LOG_DIR" ;;
*) herald_die "delivery $DELIVERY_ID ended $state; see the logs in $LOG_DIR" ;;
esac

if [ "$KEEP" -eq 1 ]; then
    herald_log "try: HERALD_TOKEN=$HERALD_TOKEN $HERALD events --tenant $TENANT"
    herald_log "(HERALD_TOKEN is this run's bootstrap admin key; create keys with: $HERALD keys create --name NAME --scope fire)"
    herald_log "Herald Console: $CONSOLE_URL — sign in with the admin key $HERALD_ADMIN_KEY"
else
    herald_log "(run with --keep to leave the services and Herald Console on $CONSOLE_URL running)"
fi
