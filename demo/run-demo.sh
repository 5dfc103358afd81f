#!/usr/bin/env bash
# make demo: a real backup of a real PostgreSQL through playbooks/backup.yml, on a fresh machine.
#
# Uses DATABASE_URL when it is set (your own server); otherwise starts the embedded default: a
# throwaway PostgreSQL holding the High Seas VTT sample (demo/start-postgres.sh), stopped at the end.
# Backups land in $BACKUP_DIR (default ./backups, the users' layout).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
bin="$repo/.venv/bin"
export BACKUP_DIR="${BACKUP_DIR:-$repo/backups}"
export ANSIBLE_CONFIG="$repo/ansible.cfg"

started_here=0
stop_server() {
    if [[ $started_here == 1 ]]; then
        "$here/stop-postgres.sh" >&2 || true
    fi
}
trap stop_server EXIT

if [[ -z "${DATABASE_URL:-}" ]]; then
    echo "==> starting the embedded demo PostgreSQL (sample database highseas_vtt)"
    eval "$("$here/start-postgres.sh")"
    export DATABASE_URL PGPASSFILE
    started_here=1
fi
echo "==> DATABASE_URL=$DATABASE_URL"
echo "==> BACKUP_DIR=$BACKUP_DIR"

echo "==> ansible-playbook playbooks/backup.yml -i inventories/local (full, schema and globals)"
"$bin/ansible-playbook" -i inventories/local playbooks/backup.yml \
    -e '{"pgbackup_run_types": ["full", "schema", "globals"], "pgbackup_max_age": "0"}'

echo "==> the backups (seawall-pgbackup list)"
"$bin/seawall-pgbackup" list

echo "==> verifying them: checksums, then every archive read back by pg_restore"
"$bin/seawall-pgbackup" verify

latest="$("$bin/seawall-pgbackup" list --type full --json | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')"
target="${DATABASE_URL%/*}/highseas_vtt_restored"
cat <<MSG

==> restore the newest full backup into a new database with:
    DATABASE_URL='$DATABASE_URL' PGPASSFILE='${PGPASSFILE:-~/.pgpass}' BACKUP_DIR='$BACKUP_DIR' \\
      $bin/seawall-pgbackup restore $latest --target-url '$target'
    (the demo server stops now; start it again first with: eval "\$(demo/start-postgres.sh)")
    Without seawall: gzip -dc $BACKUP_DIR/full/$latest.dump.gz > /tmp/vtt.dump && pg_restore -d NEWDB /tmp/vtt.dump
MSG
