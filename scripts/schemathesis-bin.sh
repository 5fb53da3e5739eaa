#!/usr/bin/env bash
# Print the path of a schemathesis executable (stdout, one line): the API
# fuzzer that tests/api_fuzz.rs runs against /openapi.json.
#
# Installs the PyPI package schemathesis==$FHIRSTREAM_SCHEMATHESIS_VERSION
# (default pinned below) into a project-local venv, .local/schemathesis, on
# first use. Idempotent; safe to run concurrently (serialised by flock).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIN="${FHIRSTREAM_SCHEMATHESIS_VERSION:-4.32.5}"
VENV="$LOCAL_DIR/schemathesis"
BIN="$VENV/bin/schemathesis"

installed() {
    [[ -x "$BIN" ]] && [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "$PIN" ]]
}

if installed; then
    printf '%s\n' "$BIN"
    exit 0
fi
mkdir -p "$LOCAL_DIR"
exec 9>"$LOCAL_DIR/.schemathesis-install.lock"
flock 9
if ! installed; then
    log "installing schemathesis $PIN (PyPI) into .local/schemathesis ..."
    pip_log="$LOCAL_DIR/schemathesis-install.log"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    rm -rf "$VENV"
    python3 -m venv "$VENV" >"$pip_log" 2>&1 || die "python3 -m venv failed (see .local/schemathesis-install.log)"
    "$VENV/bin/python" -m pip install --quiet "schemathesis==$PIN" >>"$pip_log" 2>&1 \
        || die "could not install schemathesis==$PIN from PyPI (see .local/schemathesis-install.log)"
    installed || die "schemathesis $PIN did not install"
    log "installed schemathesis $PIN at .local/schemathesis"
fi
printf '%s\n' "$BIN"
