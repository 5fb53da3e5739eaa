# shellcheck shell=bash
# Shared helpers for the provisioning scripts. Source it; do not execute it.
#
# Conventions used by every script in this directory:
#   * stdout carries only the result (a path or URL; last line),
#   * stderr carries short progress lines prefixed with "[fhirstream]",
#   * everything project-local lives under $FHIRSTREAM_ROOT/.local (git-ignored).

FHIRSTREAM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034  # used by the sourcing scripts
LOCAL_DIR="$FHIRSTREAM_ROOT/.local"

# Minimum NATS server version: 2.12 brings atomic batch publish, and 2.10+ the
# consumer `filter_subjects` the projector relies on (Debian's 2.9.10 silently
# ignores it).
NATS_MIN_VERSION="2.12.0"

log() { printf '[fhirstream] %s\n' "$*" >&2; }
die() { printf '[fhirstream] error: %s\n' "$*" >&2; exit 1; }

# version_ge A B: true when dotted version A >= B. Leading "v" and any
# pre-release/build suffix ("-RC.1", "+abc") are ignored.
version_ge() {
    local a="${1#v}" b="${2#v}" i x y
    a="${a%%[-+]*}"; b="${b%%[-+]*}"
    local IFS=.
    # shellcheck disable=SC2206
    local -a av=($a) bv=($b)
    for i in 0 1 2; do
        x="${av[i]:-0}"; y="${bv[i]:-0}"
        [[ "$x" =~ ^[0-9]+$ && "$y" =~ ^[0-9]+$ ]] || return 1
        if ((10#$x > 10#$y)); then return 0; fi
        if ((10#$x < 10#$y)); then return 1; fi
    done
    return 0
}

# nats_binary_version PATH: prints "2.15.1" for a nats-server binary, or fails.
nats_binary_version() {
    local out
    out="$(timeout 10 "$1" --version 2>/dev/null)" || return 1
    out="$(sed -n 's/.*v\([0-9][0-9.]*[^[:space:]]*\).*/\1/p' <<<"$out" | head -n1)"
    [[ -n "$out" ]] || return 1
    printf '%s\n' "$out"
}

# nats_hostport URL: prints "host port" for the first server of a NATS URL
# (nats://user:pass@host:port, host:port, tls://[::1]:4222, a,b,c ...).
nats_hostport() {
    local u="${1%%,*}" host port
    u="${u#*://}"; u="${u##*@}"; u="${u%%/*}"
    if [[ "$u" == \[* ]]; then             # [ipv6]:port
        host="${u%%]*}"; host="${host#[}"
        port="${u#*]}"; port="${port#:}"
    elif [[ "$u" == *:* ]]; then
        host="${u%:*}"; port="${u##*:}"
    else
        host="$u"; port=""
    fi
    printf '%s %s\n' "${host:-127.0.0.1}" "${port:-4222}"
}

# nats_info HOST PORT: prints the INFO line a NATS server sends on connect.
nats_info() {
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 4 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        IFS= read -r -t 3 line <&3 || exit 1
        printf "%s\n" "$line"
    ' _ "$1" "$2" 2>/dev/null
}

# nats_url_status URL: prints "<version> <jetstream:true|false>" or fails when
# nothing NATS-like answers.
nats_url_status() {
    local host port info ver js=false
    read -r host port < <(nats_hostport "$1")
    info="$(nats_info "$host" "$port")" || return 1
    [[ "$info" == INFO* ]] || return 1
    ver="$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$info")"
    [[ -n "$ver" ]] || return 1
    if grep -q '"jetstream":true' <<<"$info"; then js=true; fi
    printf '%s %s\n' "$ver" "$js"
}

# nats_url_usable URL: true when URL answers with NATS >= minimum and JetStream.
nats_url_usable() {
    local ver js
    read -r ver js < <(nats_url_status "$1") || return 1
    [[ "$js" == true ]] && version_ge "$ver" "$NATS_MIN_VERSION"
}

# pid_alive PID [NAME]: process exists (and its command line mentions NAME).
pid_alive() {
    local pid="$1" name="${2:-}"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ -z "$name" ]] && return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# close_inherited_fds: close every fd above 2 in the current (sub)shell, so a
# daemon started from it keeps no lock files or callers' pipes open (a stray
# pipe write end would make `$(...)`, CI log collectors, etc. wait forever).
close_inherited_fds() {
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
        fd="${fd##*/}"
        if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
}

# Helpers of the scripts that start a private stack (bench.sh, soak.sh).

# free_port: a free loopback TCP port.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PID PORT WHAT LOG: until PORT accepts connections, or PID dies, or 60 s.
wait_port() {
    local pid="$1" port="$2" what="$3" logfile="$4" i
    for ((i = 0; i < 600; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up (see $logfile)"
        sleep 0.1
    done
    die "$what did not listen on 127.0.0.1:$port within 60 s (see $logfile)"
}

# stop_pid PID: TERM, up to 15 s to finish, then KILL.
stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# psql_admin ARGS...: psql on $FHIRSTREAM_PG_ADMIN_URL, quiet, stopping at the first error.
psql_admin() {
    PGCONNECT_TIMEOUT=5 PGOPTIONS='-c client_min_messages=warning' \
        psql "$FHIRSTREAM_PG_ADMIN_URL" -XAtq -v ON_ERROR_STOP=1 "$@"
}

# pip_venv NAME PKG==VERSION...: a project-local venv .local/NAME holding
# exactly these pinned PyPI packages, installed on first use (or when the
# pins change) and reused after; concurrent callers are serialised by flock.
# Prints nothing; the venv's python is $LOCAL_DIR/NAME/bin/python.
pip_venv() {
    local name="$1"; shift
    local venv="$LOCAL_DIR/$name" stamp="$LOCAL_DIR/$name/.pins"
    [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$*" ]] && return 0
    mkdir -p "$LOCAL_DIR"
    exec 9>"$LOCAL_DIR/.$name-install.lock"
    flock 9
    if ! [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$*" ]]; then
        log "installing $* (PyPI) into .local/$name ..."
        local pip_log="$LOCAL_DIR/$name-install.log"
        rm -rf "$venv"
        python3 -m venv "$venv" >"$pip_log" 2>&1 || die "python3 -m venv failed (see .local/$name-install.log)"
        PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
            "$venv/bin/python" -m pip install --quiet "$@" >>"$pip_log" 2>&1 \
            || die "could not install $* from PyPI (see .local/$name-install.log)"
        printf '%s' "$*" >"$stamp"
        log "installed .local/$name"
    fi
    exec 9>&-
}
