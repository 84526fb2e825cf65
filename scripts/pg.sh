#!/usr/bin/env bash
# Throwaway PostgreSQL for the StackShift test suite.
#
#   scripts/pg.sh start     install (Debian/Ubuntu, root only) + initdb + start; prints the URL
#   scripts/pg.sh stop      stop the cluster (keeps the data dir)
#   scripts/pg.sh url       print the connection URL
#   scripts/pg.sh status    exit 0 if running, 3 if not
#   scripts/pg.sh destroy   stop and delete the data dir
#
# The cluster lives in $STACKSHIFT_PG_DIR (default /tmp/stackshift-pg), listens on
# 127.0.0.1:$STACKSHIFT_PG_PORT (default 55432, a non-default port so it never collides with a
# system cluster on 5432) and its Unix socket lives inside that dir (not /var/run/postgresql).
# It has role `stackshift` (password `stackshift`, LOGIN CREATEDB, not SUPERUSER) and database
# `stackshift` owned by it. Tests create their own per-test databases from that URL.
#
# `start` is idempotent: if the cluster is already running it only re-checks the role/database
# and prints the URL. Only the URL goes to stdout; all progress messages go to stderr.
#
# Other knobs: STACKSHIFT_PG_BIN (directory with initdb/pg_ctl/postgres; default: newest
# /usr/lib/postgresql/*/bin, then pg_config --bindir, then PATH).
set -euo pipefail

PG_DIR="${STACKSHIFT_PG_DIR:-/tmp/stackshift-pg}"
PG_PORT="${STACKSHIFT_PG_PORT:-55432}"
PG_HOST=127.0.0.1
DATA_DIR="$PG_DIR/data"
SOCK_DIR="$PG_DIR/run"
LOG_FILE="$PG_DIR/postgresql.log"
ROLE=stackshift
ROLE_PASSWORD=stackshift
DB_NAME=stackshift
SUPERUSER=postgres # bootstrap superuser name passed to initdb -U (not the OS user)

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() {
    printf 'pg.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

url() { printf 'postgres://%s:%s@%s:%s/%s\n' "$ROLE" "$ROLE_PASSWORD" "$PG_HOST" "$PG_PORT" "$DB_NAME"; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the OS user owning the cluster: `postgres` when we are root (initdb and
# postgres refuse to run as root), the current user otherwise. Runs from / so that a cwd the
# postgres user cannot read (e.g. /root/...) does not produce warnings.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Locate a directory containing initdb, pg_ctl and postgres. Prints it, or returns 1.
find_pg_bin() {
    local d
    if [ -n "${STACKSHIFT_PG_BIN:-}" ]; then
        [ -x "$STACKSHIFT_PG_BIN/pg_ctl" ] || die "STACKSHIFT_PG_BIN=$STACKSHIFT_PG_BIN has no pg_ctl"
        printf '%s\n' "$STACKSHIFT_PG_BIN"
        return 0
    fi
    # Newest major version first (sort -V handles 9.6 < 10 < 15 < 17).
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        d="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
        if [ -x "$d/postgres" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    return 1
}

install_postgres() {
    if ! is_root; then
        die "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin, pg_config, PATH).
  Install them first, e.g.:  sudo apt-get install -y postgresql      (Debian/Ubuntu)
                             brew install postgresql@16               (macOS)
  or point STACKSHIFT_PG_BIN at a directory containing initdb, pg_ctl and postgres,
  or skip this script entirely by exporting STACKSHIFT_TEST_POSTGRES_URL."
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "PostgreSQL server binaries not found and apt-get is unavailable; install PostgreSQL (initdb, pg_ctl, postgres) manually"
    log "PostgreSQL server binaries not found; installing with apt-get (root)..."
    export DEBIAN_FRONTEND=noninteractive
    # Try without `apt-get update` first (fast path when package lists are fresh enough).
    if ! apt-get install -y -q postgresql >&2; then
        apt-get update -q >&2
        apt-get install -y -q postgresql >&2
    fi
}

PG_BIN=""
resolve_bin() {
    if ! PG_BIN="$(find_pg_bin)"; then
        install_postgres
        PG_BIN="$(find_pg_bin)" || die "PostgreSQL was installed but initdb/pg_ctl/postgres still cannot be found"
    fi
}

# "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> 15.18 / 15
pg_version() { "$PG_BIN/pg_ctl" --version | awk '{print $3}'; }
pg_major() { pg_version | cut -d. -f1; }

pg_ctl_() { as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" "$@"; }

is_running() {
    [ -f "$DATA_DIR/PG_VERSION" ] || return 1
    local bin
    bin="$(find_pg_bin)" || return 1
    as_pg "$bin/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

# psql as the bootstrap superuser over the private Unix socket (trust auth, socket mode 0700).
psql_super() {
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$PG_PORT" -U "$SUPERUSER" "$@"
}

prepare_dirs() {
    mkdir -p "$PG_DIR"
    if is_root; then
        id postgres >/dev/null 2>&1 ||
            die "OS user 'postgres' does not exist (it is created by the postgresql package); create it or run as a non-root user"
        chown postgres: "$PG_DIR"
        chmod 0700 "$PG_DIR"
        as_pg test -w "$PG_DIR" ||
            die "user postgres cannot write $PG_DIR (a parent directory is probably not traversable); set STACKSHIFT_PG_DIR to a path under /tmp"
    fi
}

do_initdb() {
    if [ -d "$DATA_DIR" ] && [ ! -f "$DATA_DIR/PG_VERSION" ]; then
        log "removing incomplete data directory $DATA_DIR (no PG_VERSION: previous initdb did not finish)"
        rm -rf "$DATA_DIR"
    fi
    if [ -f "$DATA_DIR/PG_VERSION" ]; then
        local have want
        have="$(cat "$DATA_DIR/PG_VERSION")"
        want="$(pg_major)"
        if [ "$have" != "$want" ]; then
            die "$DATA_DIR was created by PostgreSQL $have but the binaries in $PG_BIN are version $want.
  It is a throwaway test cluster: run 'scripts/pg.sh destroy' and then 'scripts/pg.sh start'."
        fi
        return 0
    fi
    log "initdb ($PG_BIN) into $DATA_DIR"
    local pwfile
    pwfile="$PG_DIR/.initdb-pw"
    # The bootstrap superuser gets a random password; we only ever use it via the trust socket.
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pwfile"
    is_root && chown postgres: "$pwfile"
    chmod 0600 "$pwfile"
    if ! as_pg "$PG_BIN/initdb" -D "$DATA_DIR" -U "$SUPERUSER" --pwfile="$pwfile" \
        -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1; then
        cat "$PG_DIR/initdb.log" >&2
        rm -f "$pwfile"
        die "initdb failed (full output above, also in $PG_DIR/initdb.log)"
    fi
    rm -f "$pwfile"
}

# (Re)write our settings on every start so changes to this script (or to the port) take effect.
write_config() {
    local conf="$DATA_DIR/stackshift-test.conf"
    as_pg tee "$conf" >/dev/null <<EOF
# Written by scripts/pg.sh on every start; edits here are overwritten.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCK_DIR'
unix_socket_permissions = 0700
max_connections = 300
shared_buffers = 128MB
# Durability settings stay at their safe defaults (fsync, synchronous_commit, full_page_writes
# = on): the engine's correctness tests should see real commit semantics.
fsync = on
synchronous_commit = on
full_page_writes = on
# Tiny test databases never need parallel query; this also avoids /dev/shm exhaustion in
# containers with a 64 MB /dev/shm.
max_parallel_workers_per_gather = 0
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_min_error_statement = error
EOF
    if ! grep -q "^include_if_exists = 'stackshift-test.conf'" "$DATA_DIR/postgresql.conf"; then
        printf "\ninclude_if_exists = 'stackshift-test.conf'\n" | as_pg tee -a "$DATA_DIR/postgresql.conf" >/dev/null
    fi
}

provision() {
    psql_super -d postgres <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$ROLE_PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$ROLE_PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $ROLE'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = '$DB_NAME')
\gexec
SQL
}

cmd_start() {
    resolve_bin
    prepare_dirs
    if is_running; then
        log "already running (data dir $DATA_DIR)"
    else
        do_initdb
        mkdir -p "$SOCK_DIR"
        is_root && chown postgres: "$SOCK_DIR"
        chmod 0700 "$SOCK_DIR"
        write_config
        log "starting PostgreSQL $(pg_version) on $PG_HOST:$PG_PORT (log: $LOG_FILE)"
        if ! pg_ctl_ -l "$LOG_FILE" -w -t 60 start </dev/null >/dev/null 2>&1; then
            log "pg_ctl start failed; last lines of $LOG_FILE:"
            tail -n 30 "$LOG_FILE" >&2 || true
            die "could not start PostgreSQL (is port $PG_PORT already in use? set STACKSHIFT_PG_PORT to use another)"
        fi
    fi
    provision
    if ! "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -d "$DB_NAME" -U "$ROLE"; then
        die "PostgreSQL is running but not accepting TCP connections on $PG_HOST:$PG_PORT (log: $LOG_FILE)"
    fi
    log "ready: $(url)"
    url
}

cmd_stop() {
    if ! is_running; then
        log "not running (data dir $DATA_DIR)"
        return 0
    fi
    PG_BIN="$(find_pg_bin)"
    pg_ctl_ -m fast -w -t 60 stop >/dev/null
    log "stopped"
}

cmd_status() {
    if is_running; then
        log "running: $(url) (data dir $DATA_DIR)"
        return 0
    fi
    log "not running (data dir $DATA_DIR)"
    return 3
}

cmd_destroy() {
    cmd_stop
    case "$PG_DIR" in
    "" | / | /tmp | "$HOME") die "refusing to delete suspicious STACKSHIFT_PG_DIR=$PG_DIR" ;;
    esac
    rm -rf "$PG_DIR"
    log "deleted $PG_DIR"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
url) url ;;
status) cmd_status ;;
destroy) cmd_destroy ;;
*)
    echo "usage: $0 {start|stop|url|status|destroy}" >&2
    exit 2
    ;;
esac
