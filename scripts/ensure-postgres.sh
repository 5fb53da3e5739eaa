#!/usr/bin/env bash
# Make sure a PostgreSQL server is reachable; print the admin URL to use (last
# line of stdout).
#
#   scripts/ensure-postgres.sh [start]  reuse $FHIRSTREAM_PG_ADMIN_URL (default
#                                       postgres://postgres@127.0.0.1:5432/postgres)
#                                       if it accepts a login; else reuse/start a
#                                       private cluster in .local/pg on 127.0.0.1:$FHIRSTREAM_LOCAL_PG_PORT
#                                       (default 5433), installing Debian's
#                                       postgresql package first if no server
#                                       binaries exist at all (root only)
#   scripts/ensure-postgres.sh stop     stop the private cluster (if running)
#   scripts/ensure-postgres.sh status
#
# Private cluster: data .local/pg/data, socket dir .local/pg, log .local/pg/postgres.log,
# trust auth for user "postgres". Running as root, the server runs as the
# "postgres" system user (or a "fhirstream" system user created on demand),
# because initdb/postgres refuse to run as root.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ADMIN_URL="${FHIRSTREAM_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${FHIRSTREAM_LOCAL_PG_PORT:-5433}"
PG_DIR="$LOCAL_DIR/pg"
DATA="$PG_DIR/data"
LOGFILE="$PG_DIR/postgres.log"
LOCAL_URL="postgres://postgres@127.0.0.1:$PORT/postgres"

[[ "$PORT" =~ ^[0-9]+$ ]] || die "FHIRSTREAM_LOCAL_PG_PORT must be a port number, got '$PORT'"

# pg_bindir: the directory with initdb/pg_ctl/postgres: the one matching an
# existing .local/pg/data, else the newest /usr/lib/postgresql/<v>/bin, else
# initdb on PATH. Returns 1 when there is none, 2 on a version mismatch.
pg_bindir() {
    local want="" d="" x
    if [[ -f "$DATA/PG_VERSION" ]]; then
        want="$(cat "$DATA/PG_VERSION")"
        x="/usr/lib/postgresql/$want/bin"
        if [[ -x "$x/pg_ctl" && -x "$x/postgres" ]]; then echo "$x"; return 0; fi
    fi
    for x in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [[ -x "$x/initdb" && -x "$x/pg_ctl" && -x "$x/postgres" ]]; then d="$x"; break; fi
    done
    if [[ -z "$d" ]] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        d="$(dirname "$(readlink -f "$(command -v initdb)")")"
    fi
    [[ -n "$d" && -x "$d/postgres" ]] || return 1
    if [[ -n "$want" ]] && ! "$d/postgres" --version | grep -q " $want\."; then
        log ".local/pg/data was created by PostgreSQL $want but the server in $d is $("$d/postgres" --version); run 'make clean-local'"
        return 2
    fi
    echo "$d"
}

psql_bin() {
    local d
    if command -v psql >/dev/null 2>&1; then command -v psql; return 0; fi
    d="$(pg_bindir 2>/dev/null)" && [[ -x "$d/psql" ]] && { echo "$d/psql"; return 0; }
    return 1
}

# pg_ok URL: true when URL accepts a login and runs a query.
pg_ok() {
    local psql
    psql="$(psql_bin)" || return 1
    PGCONNECT_TIMEOUT=3 "$psql" "$1" -XAtqc 'select 1' >/dev/null 2>&1
}

# The OS user that owns and runs the private cluster.
RUN_USER=""
pick_run_user() {
    if [[ "$(id -u)" != 0 ]]; then RUN_USER=""; return 0; fi
    if id -u postgres >/dev/null 2>&1; then
        RUN_USER=postgres
    else
        if ! id -u fhirstream >/dev/null 2>&1; then
            log "creating system user 'fhirstream' to run the private PostgreSQL cluster"
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin fhirstream
        fi
        RUN_USER=fhirstream
    fi
}

# as_run_user CMD...: run in $PG_DIR (initdb/pg_ctl dislike unreadable cwds).
as_run_user() {
    if [[ -n "$RUN_USER" ]]; then
        (cd "$PG_DIR" && runuser -u "$RUN_USER" -- "$@")
    else
        (cd "$PG_DIR" && "$@")
    fi
}

install_postgres() {
    [[ "$(id -u)" == 0 ]] || die "no PostgreSQL server binaries found; install them (apt-get install postgresql) or set FHIRSTREAM_PG_ADMIN_URL"
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries and no apt-get; install PostgreSQL or set FHIRSTREAM_PG_ADMIN_URL"
    log "installing PostgreSQL from apt (apt-get install postgresql) ..."
    local apt_log="$LOCAL_DIR/apt-postgresql.log"
    mkdir -p "$LOCAL_DIR"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql postgresql-client
    } >"$apt_log" 2>&1 || { tail -n 20 "$apt_log" >&2; die "apt-get install postgresql failed (see .local/apt-postgresql.log)"; }
}

ensure_dir_access() {
    mkdir -p "$PG_DIR"
    [[ -z "$RUN_USER" ]] && return 0
    chown -R "$RUN_USER:" "$PG_DIR"
    chmod 700 "$PG_DIR"
    runuser -u "$RUN_USER" -- test -w "$PG_DIR" 2>/dev/null \
        || die "user '$RUN_USER' cannot reach $PG_DIR (a parent directory is not world-traversable); set FHIRSTREAM_PG_ADMIN_URL to an existing server instead"
}

cluster_running() {
    [[ -f "$DATA/postmaster.pid" ]] || return 1
    as_run_user "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

cmd_start() {
    if pg_ok "$ADMIN_URL"; then
        printf '%s\n' "$ADMIN_URL"; return 0
    fi
    if [[ "$ADMIN_URL" != "$LOCAL_URL" ]]; then
        if pg_ok "$LOCAL_URL" && [[ -f "$DATA/PG_VERSION" ]]; then
            log "PostgreSQL at $ADMIN_URL not usable; reusing private cluster at $LOCAL_URL"
            printf '%s\n' "$LOCAL_URL"; return 0
        fi
        log "PostgreSQL at $ADMIN_URL not usable; using private cluster in .local/pg on port $PORT"
    fi

    mkdir -p "$PG_DIR"
    exec 9>"$LOCAL_DIR/.pg.lock"
    flock 9

    local rc=0
    BIN="$(pg_bindir)" || rc=$?
    [[ $rc -le 1 ]] || exit 1
    if [[ $rc == 1 ]]; then
        install_postgres
        BIN="$(pg_bindir)" || die "PostgreSQL server binaries still missing after apt-get install"
        # The package may have brought up its own cluster that fits the admin URL.
        if pg_ok "$ADMIN_URL"; then printf '%s\n' "$ADMIN_URL"; return 0; fi
    fi
    pick_run_user
    ensure_dir_access

    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        log "initdb $DATA ($("$BIN/postgres" --version))"
        rm -rf "$DATA"
        as_run_user "$BIN/initdb" -D "$DATA" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1 \
            || { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed (see .local/pg/initdb.log)"; }
        printf "\n# fhirstream: per-start settings written by scripts/ensure-postgres.sh\ninclude_if_exists = 'fhirstream.conf'\n" \
            | as_run_user tee -a "$DATA/postgresql.conf" >/dev/null
    fi

    if cluster_running; then
        # Started earlier (maybe with another port) but not answering on $PORT.
        log "private cluster is running but not answering on $PORT; restarting it"
        as_run_user "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi

    # Rewritten on every start so FHIRSTREAM_LOCAL_PG_PORT changes take effect.
    as_run_user tee "$DATA/fhirstream.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PG_DIR'
max_connections = 200
EOF
    log "starting private PostgreSQL on 127.0.0.1:$PORT (log: .local/pg/postgres.log)"
    # pg_ctl detaches the postmaster into its own session; no inherited fds
    # (our lock on fd 9, callers' pipes) may leak into it.
    (close_inherited_fds; as_run_user "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 start </dev/null >/dev/null) \
        || { tail -n 20 "$LOGFILE" >&2 2>/dev/null; die "could not start the private PostgreSQL cluster"; }
    pg_ok "$LOCAL_URL" || die "private PostgreSQL started but $LOCAL_URL does not accept logins"
    log "PostgreSQL up at $LOCAL_URL"
    printf '%s\n' "$LOCAL_URL"
}

cmd_stop() {
    if [[ ! -f "$DATA/postmaster.pid" ]]; then
        log "private PostgreSQL cluster is not running"; return 0
    fi
    BIN="$(pg_bindir)" || die "cannot find pg_ctl to stop the private cluster"
    pick_run_user
    if cluster_running; then
        log "stopping private PostgreSQL cluster"
        as_run_user "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    else
        log "private PostgreSQL cluster is not running"
    fi
}

cmd_status() {
    if pg_ok "$ADMIN_URL"; then echo "$ADMIN_URL: ok"; else echo "$ADMIN_URL: not usable"; fi
    if pg_ok "$LOCAL_URL"; then echo "$LOCAL_URL: ok"; else echo "$LOCAL_URL: not usable"; fi
    pg_ok "$ADMIN_URL" || pg_ok "$LOCAL_URL"
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
