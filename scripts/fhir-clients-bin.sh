#!/usr/bin/env bash
# Print the path of a python (stdout, one line) that has the FHIR clients
# tests/real_clients.rs drives: fhirpy, fhirclient and fhir-kindling, pinned,
# in a project-local venv (.local/fhir-clients) installed from PyPI on first
# use (~15 s). Idempotent; safe to run concurrently (serialised by flock).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# fhir-kindling 1.0.3 passes `proxies` to httpx.Client, which httpx 0.28 removed.
PINS=(fhirpy==2.3.1 fhirclient==4.4.0 fhir-kindling==1.0.3 httpx==0.27.2)
VENV="$LOCAL_DIR/fhir-clients"
PY="$VENV/bin/python"
STAMP="$VENV/.pins"

installed() {
    [[ -x "$PY" ]] && [[ "$(cat "$STAMP" 2>/dev/null)" == "${PINS[*]}" ]]
}

if installed; then
    printf '%s\n' "$PY"
    exit 0
fi
mkdir -p "$LOCAL_DIR"
exec 9>"$LOCAL_DIR/.fhir-clients-install.lock"
flock 9
if ! installed; then
    log "installing ${PINS[*]} (PyPI) into .local/fhir-clients ..."
    pip_log="$LOCAL_DIR/fhir-clients-install.log"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    rm -rf "$VENV"
    python3 -m venv "$VENV" >"$pip_log" 2>&1 || die "python3 -m venv failed (see .local/fhir-clients-install.log)"
    "$PY" -m pip install --quiet "${PINS[@]}" >>"$pip_log" 2>&1 \
        || die "could not install ${PINS[*]} from PyPI (see .local/fhir-clients-install.log)"
    printf '%s' "${PINS[*]}" >"$STAMP"
    log "installed the FHIR clients at .local/fhir-clients"
fi
printf '%s\n' "$PY"
