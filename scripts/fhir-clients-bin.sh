#!/usr/bin/env bash
# Print the path of a python (stdout, one line) that has the FHIR clients
# tests/real_clients.rs drives: fhirpy, fhirclient and fhir-kindling, pinned,
# in a project-local venv (.local/fhir-clients) installed from PyPI on first
# use (~15 s). Idempotent; safe to run concurrently.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# fhir-kindling 1.0.3 passes `proxies` to httpx.Client, which httpx 0.28 removed.
pip_venv fhir-clients fhirpy==2.3.1 fhirclient==4.4.0 fhir-kindling==1.0.3 httpx==0.27.2
printf '%s\n' "$LOCAL_DIR/fhir-clients/bin/python"
