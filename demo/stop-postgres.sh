#!/usr/bin/env bash
# Stop the demo PostgreSQL started by demo/start-postgres.sh.
#
#   demo/stop-postgres.sh            # pg_ctl stop -m fast, keep $DEMO_DIR
#   demo/stop-postgres.sh --purge    # ... and remove $DEMO_DIR (also: DEMO_PURGE=1)
set -euo pipefail

DEMO_DIR="${DEMO_DIR:-/tmp/seawall-demo}"
DATA="$DEMO_DIR/data"
purge="${DEMO_PURGE:-0}"
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
    esac
done

say() { printf '%s\n' "demo-postgres: $*" >&2; }

if [[ -f "$DATA/PG_VERSION" ]]; then
    BIN=""
    [[ -f "$DEMO_DIR/bindir" ]] && BIN="$(cat "$DEMO_DIR/bindir")"
    if [[ -z "$BIN" || ! -x "$BIN/pg_ctl" ]]; then
        major="$(cat "$DATA/PG_VERSION")"
        BIN="/usr/lib/postgresql/$major/bin"
    fi
    owner="$(stat -c %U "$DATA")"
    if [[ "$(id -u)" -eq 0 && "$owner" != root ]]; then
        as_server() { runuser -u "$owner" -- env -u PGDATA "$@"; }
    else
        as_server() { env -u PGDATA "$@"; }
    fi
    pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)"
    if [[ -x "$BIN/pg_ctl" ]] && as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
        say "stopped the server in $DATA"
    elif [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        # The binaries that started it are gone (a removed checkout): SIGINT is PostgreSQL's fast shutdown.
        kill -INT "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        say "stopped the server in $DATA (pid $pid)"
    else
        say "not running"
    fi
else
    say "no demo cluster in $DEMO_DIR"
fi

if [[ "$purge" == 1 && -d "$DEMO_DIR" ]]; then
    case "$DEMO_DIR" in
        /|/tmp|/root|/home|"$HOME") say "refusing to remove $DEMO_DIR"; exit 1 ;;
    esac
    rm -rf -- "$DEMO_DIR"
    say "removed $DEMO_DIR"
fi
