"""A fleet (issue 13): 20 hosts, each with its own database (on PostgreSQL 15 or 18) and its own backup directory,
backed up by playbooks/backup.yml with forks=10, then an idempotent re-run. Hosts are connection-local aliases of
this machine, so anything the collection shares between hosts by accident (a lock, a temporary name, a port, a
run record or metrics file) collides here. Wall times are printed for docs/fleet.md, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
HOSTS = 20
FORKS = 10


def _run(inventory: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    env.pop("DATABASE_URL", None)
    env.pop("BACKUP_DIR", None)
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "-f", str(FORKS),
                           str(REPO / "playbooks" / "backup.yml"), "-e", '{"pgbackup_run_types": ["full"]}'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)


def test_twenty_hosts_converge_then_rerun_idempotently(pg15, pg18, tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-playbook is not installed (make setup-dev)")
    tag = uuid.uuid4().hex[:6]
    hosts = {}
    for number in range(HOSTS):
        cluster = pg15 if number % 2 == 0 else pg18
        name = "fleet_%s_%02d" % (tag, number)
        cluster.create_db(name)
        cluster.psql("CREATE TABLE players (id int PRIMARY KEY, host text); INSERT INTO players "
                     "SELECT g, '%s' FROM generate_series(1, %d) g" % (name, 100 + number), db=name)
        hosts["db-%02d" % number] = {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "pgbackup_database_url": cluster.url(name), "pgbackup_backup_dir": str(tmp_path / name / "backups"),
            "pgbackup_environment": {"PGPASSFILE": str(cluster.passfile)}}
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"postgresql": {"hosts": hosts}}}}))
    try:
        started = time.monotonic()
        first = _run(inventory, tmp_path)
        first_wall = time.monotonic() - started
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        stats = json.loads(first.stdout)["stats"]
        assert sorted(stats) == sorted([*hosts, "localhost"])  # localhost: the playbook's host pattern check
        assert all(s["failures"] == 0 and s["unreachable"] == 0 and s["changed"] >= 1
                   for host, s in stats.items() if host != "localhost"), stats

        started = time.monotonic()
        again = _run(inventory, tmp_path)
        again_wall = time.monotonic() - started
        assert again.returncode == 0, again.stdout[-4000:]
        stats = json.loads(again.stdout)["stats"]
        assert all(s["changed"] == 0 and s["failures"] == 0 for s in stats.values()), stats

        # each host's repository holds exactly its own database's backup, with its own run record
        for host, variables in hosts.items():
            backups = Path(variables["pgbackup_backup_dir"])
            manifests = [json.loads(p.read_text()) for p in (backups / "full").glob("*.json")]
            database = variables["pgbackup_database_url"].rsplit("/", 1)[1]
            assert [m["database"] for m in manifests] == [database], (host, manifests)
            record = json.loads((backups / "logs" / "last-run-create-full.json").read_text())
            assert record["status"] == "ok", (host, record)
        print("\nfleet of %d hosts, forks=%d: first run %.1f s (%.2f s per host), re-run %.1f s (%.2f s per host)"
              % (HOSTS, FORKS, first_wall, first_wall / HOSTS, again_wall, again_wall / HOSTS))
    finally:
        for number in range(HOSTS):
            (pg15 if number % 2 == 0 else pg18).drop_db("fleet_%s_%02d" % (tag, number))
