#!/usr/bin/env bash
# Drop databases named fhirstream_test_* that earlier (crashed/interrupted) test
# runs left behind on $FHIRSTREAM_PG_ADMIN_URL.
#
# Careful on purpose:
#   * the LIKE pattern escapes "_" (otherwise it is a one-character wildcard),
#   * every name is re-checked against ^fhirstream_test_[A-Za-z0-9_]+$ here,
#   * databases with open connections (a test run in progress) are skipped, and
#     DROP DATABASE without FORCE fails rather than kicking anyone out.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

url="${FHIRSTREAM_PG_ADMIN_URL:?FHIRSTREAM_PG_ADMIN_URL must be set (run via scripts/env.sh)}"
psql=(psql "$url" -XAtq -v ON_ERROR_STOP=1)

names="$(PGCONNECT_TIMEOUT=5 "${psql[@]}" -c "
    select d.datname from pg_database d
    where d.datname like 'fhirstream\\_test\\_%' escape '\\'
      and not d.datistemplate
      and not exists (select 1 from pg_stat_activity a where a.datid = d.oid)
    order by 1")" || die "cannot list databases on $url"

# Checked names, then four DROPs at a time: one by one, a few hundred
# leftovers took minutes (each DROP DATABASE waits for a checkpoint).
checked=()
while IFS= read -r name; do
    [[ -n "$name" ]] || continue
    if [[ ! "$name" =~ ^fhirstream_test_[A-Za-z0-9_]+$ ]]; then
        log "skipping unexpected database name '$name'"
        continue
    fi
    checked+=("$name")
done <<<"$names"

((${#checked[@]})) || exit 0
results="$(printf '%s\n' "${checked[@]}" | xargs -P 4 -I{} \
    sh -c '"$@" -c "drop database if exists \"{}\"" >/dev/null 2>&1 && echo ok || echo failed' _ "${psql[@]}")"
dropped=$(grep -c '^ok$' <<<"$results" || true)
failed=$(grep -c '^failed$' <<<"$results" || true)

if ((failed)); then
    log "dropped $dropped leftover test database(s); $failed could not be dropped (in use?)"
elif ((dropped)); then
    log "dropped $dropped leftover test database(s)"
fi
