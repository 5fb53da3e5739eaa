#!/usr/bin/env bash
# Run the SEKMET FHIR R4 conformance scenarios (PyPI sekmet-fhir, pinned)
# against a running fhirstream (`make run` in another terminal): `make sekmet`.
#
#   FHIRSTREAM_URL      the server (default http://127.0.0.1:8080)
#   SEKMET_TENANT       tenant to create (if missing) and test (default sekmet)
#   SEKMET_SCENARIOS    scenario names or 'all' (default all)
#
# A platform admin token is minted with `fhirstream token` (the development
# secret of `make run`); reports land in .local/sekmet/reports/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$FHIRSTREAM_ROOT"

PIN="${FHIRSTREAM_SEKMET_VERSION:-0.1.1}"
URL="${FHIRSTREAM_URL:-http://127.0.0.1:8080}"
TENANT="${SEKMET_TENANT:-sekmet}"
pip_venv sekmet "sekmet-fhir==$PIN"
VENV="$LOCAL_DIR/sekmet"
TOKEN="$(cargo run --quiet --release -- token --tenant '*' --scope 'system/*.* fhirstream/admin')"
curl -sf -o /dev/null -X POST "$URL/admin/tenants" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "{\"id\":\"$TENANT\"}" || log "tenant $TENANT exists (or could not be created)"
WORK="$LOCAL_DIR/sekmet/work"
mkdir -p "$WORK"
cat >"$WORK/settings.yaml" <<YAML
base_url: http://127.0.0.1:8091/fhir
host: 127.0.0.1
port: 8091
peers:
  fhirstream:
    base_url: $URL/fhir/$TENANT
    auth: {type: bearer, token: "$TOKEN"}
YAML
cd "$WORK"
exec "$VENV/bin/sekmet" scenario run ${SEKMET_SCENARIOS:-all} --peer fhirstream --no-serve -c settings.yaml \
    --report-dir "$LOCAL_DIR/sekmet/reports"
