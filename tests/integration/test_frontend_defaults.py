"""One default for every front end: restore, verify and drill run from the host command (the CLI) and from the
modules (through ``ansible-playbook``) decide ``with_globals``, the level and the jobs the same way.

``with_globals`` unset creates the backup's roles first only when restoring on another server than DATABASE_URL's:
the source is a database on the pg15 session cluster, "same" restores on pg15, "other" on pg18.
Verify and drill run through the run hook from both front ends: each leaves the same run record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from tests.integration import cli
from tests.support import load_sample

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
JOBS = 2  # BACKUP_JOBS of both front ends: restores must use it when jobs is not given


@pytest.fixture(scope="module")
def source(pg15, pg18, tmp_path_factory):
    """A full backup of a sample database on pg15, the environment both front ends run in, and cleanup."""
    if not ANSIBLE_PLAYBOOK.exists():
        if os.environ.get("CI"):
            pytest.fail("ansible-playbook is missing in CI (make setup-dev installs it)", pytrace=False)
        pytest.skip("ansible-playbook is not installed (make setup-dev)")
    name = "vtt_fe_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    root = tmp_path_factory.mktemp("frontends")
    env = cli.cli_env(pg15.url(name), root / "backups", PGPASSFILE=str(pg18.passfile), BACKUP_JOBS=str(JOBS))
    backup = cli.create(env, "full")
    made = []
    try:
        yield {"name": name, "env": env, "backup": backup, "root": root, "made": made,
               "servers": {"same": pg15, "other": pg18}}
    finally:
        for cluster, database in made:
            cluster.drop_db(database)
        pg15.drop_db(name)


def run_module(source, module: str, args: Dict[str, Any], tag: str) -> Dict[str, Any]:
    """Run one task of ``module`` with ``args`` by ansible-playbook; its registered result."""
    env = source["env"]
    args = dict(args, database_url=env["DATABASE_URL"], backup_dir=env["BACKUP_DIR"])
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": {"ansible_python_interpreter": sys.executable},
             "tasks": [{"name": "frontend", "seawall.pgbackup.%s" % module: args, "ignore_errors": True,
                        "environment": {"PGPASSFILE": env["PGPASSFILE"], "BACKUP_JOBS": env["BACKUP_JOBS"]}}]}]
    path = source["root"] / ("play-%s.yml" % tag)
    path.write_text(json.dumps(play))  # JSON is YAML; the file holds the database URL: private
    path.chmod(0o600)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_", "DATABASE_URL"))}
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False,
                          env=dict(base, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"))
    assert proc.stdout.strip(), proc.stderr[-3000:]
    tasks = [t for play_out in json.loads(proc.stdout)["plays"] for t in play_out["tasks"]
             if t["task"]["name"] == "frontend"]
    return tasks[0]["hosts"]["localhost"]


def target_url(source, where: str, database: str) -> str:
    cluster = source["servers"][where]
    source["made"].append((cluster, database))
    return cluster.url(database, with_password=False)


RESTORE_ROWS = [
    # (where, with_globals given, roles expected first)
    ("same", None, False),
    ("other", None, True),
    ("same", True, True),
]


@pytest.mark.parametrize("front", ["cli", "module"])
@pytest.mark.parametrize("where,with_globals,expected", RESTORE_ROWS)
def test_restore_defaults_are_the_same_from_every_front_end(source, front, where, with_globals, expected):
    backup_id = source["backup"]["id"]
    database = "%s_%s_%s_%s" % (source["name"], front, where, {None: "unset", True: "on"}[with_globals])
    url = target_url(source, where, database)
    if front == "cli":
        flags = {None: [], True: ["--with-globals"]}[with_globals]
        restored = json.loads(cli.run(["restore", backup_id, "--target-url", url, "--json"] + flags,
                                      source["env"]).stdout)
    else:
        args: Dict[str, Any] = {"backup": backup_id, "target_url": url}
        if with_globals is not None:
            args["with_globals"] = with_globals
        result = run_module(source, "pg_backup_restore", args, "restore-%s" % database)
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is True
        restored = result["restore"]
    assert restored["backup_id"] == backup_id
    assert restored["globals_applied"] is expected
    assert restored["jobs"] == JOBS
    assert restored["objects"] > 0
    cluster = source["servers"][where]
    assert cluster.scalar("SELECT current_setting('seawall.restored_backup')", database) == backup_id


def _roles_first(details: str) -> bool:
    return "the backup's roles created first" in details


def _run_record(source, job: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(source["env"]["BACKUP_DIR"], "logs", "last-run-%s.json" % job)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("front", ["cli", "module"])
@pytest.mark.parametrize("where", ["same", "other"])
def test_verify_restore_level_creates_roles_only_on_another_server(source, front, where):
    backup_id = source["backup"]["id"]
    server = source["servers"][where].url("postgres", with_password=False)
    if front == "cli":
        record = json.loads(cli.run(["verify", backup_id, "--level", "restore", "--target-url", server, "--json"],
                                    source["env"]).stdout)[0]
    else:
        result = run_module(source, "pg_backup_verify", {"backup": backup_id, "level": "restore",
                                                         "target_url": server}, "verify-%s" % where)
        assert not result.get("failed"), result.get("msg")
        record = result["verification"]
    assert record["ok"] is True and record["level"] == "restore"
    assert _roles_first(record["details"]) is (where == "other"), record["details"]
    # Monitored the same way from both front ends: the run hook wrote the verify job's record.
    run = _run_record(source, "verify")
    assert run["command"] == "verify" and run["status"] == "ok" and run["finished_at"] >= record["at"]


@pytest.mark.parametrize("front", ["cli", "module"])
@pytest.mark.parametrize("where", ["same", "other"])
def test_drill_creates_roles_only_on_another_server(source, front, where):
    server = source["servers"][where].url("postgres", with_password=False)
    if front == "cli":
        report = json.loads(cli.run(["drill", "--target-url", server, "--json"], source["env"]).stdout)
    else:
        result = run_module(source, "pg_backup_verify", {"drill": True, "target_url": server}, "drill-%s" % where)
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is True
        report = result["report"]
    assert report["ok"] is True and report["backup_id"] == source["backup"]["id"]
    assert report["server"] == "127.0.0.1:%d" % source["servers"][where].port
    assert _roles_first(report["details"]) is (where == "other"), report["details"]
    run = _run_record(source, "drill")
    assert run["command"] == "drill" and run["status"] == "ok" and run["finished_at"] >= report["finished_at"]


@pytest.mark.parametrize("front", ["cli", "module"])
def test_verify_level_defaults_to_archive_everywhere(source, front):
    backup_id = source["backup"]["id"]
    if front == "cli":
        record = json.loads(cli.run(["verify", backup_id, "--json"], source["env"]).stdout)[0]
    else:
        result = run_module(source, "pg_backup_verify", {"backup": backup_id}, "verify-level")
        assert not result.get("failed"), result.get("msg")
        record = result["verification"]
    assert record["ok"] is True and record["level"] == "archive"
    assert "archive entries" in record["details"]


@pytest.mark.parametrize("front", ["cli", "module"])
def test_a_failed_verification_fails_and_is_recorded_from_every_front_end(source, front, tmp_path):
    """A probe that returns false: the front end fails, the run record says failed with the engine's message."""
    backup_id = source["backup"]["id"]
    server = source["servers"]["same"].url("postgres", with_password=False)
    if front == "cli":
        proc = cli.run(["verify", backup_id, "--level", "restore", "--target-url", server, "--probe", "SELECT false"],
                       source["env"], check=False)
        assert "probe 'SELECT false' returned [['f']], not true" in cli.error_line(proc)
    else:
        result = run_module(source, "pg_backup_verify", {"backup": backup_id, "level": "restore",
                                                         "target_url": server, "probes": ["SELECT false"]},
                            "verify-bad")
        assert result.get("failed") is True and result["step"] == "verify"
        assert "probe 'SELECT false' returned [['f']], not true" in result["msg"]
        assert result["verification"]["ok"] is False  # what the run recorded, in the failed result
    run = _run_record(source, "verify")
    assert run["status"] == "failed" and run["step"] == "verify"
    assert "probe 'SELECT false' returned [['f']], not true" in run["error"]
    # Verify it again so the backup counts as good for the rows that follow.
    cli.run(["verify", backup_id, "--level", "checksum"], source["env"])


def test_module_restore_is_idempotent_on_the_recorded_backup_and_refuses_an_occupied_target(source):
    """The engine's plan decides: skip a target that records the backup, refuse one holding objects."""
    backup_id = source["backup"]["id"]
    database = "%s_idem" % source["name"]
    url = target_url(source, "same", database)
    first = run_module(source, "pg_backup_restore", {"backup": backup_id, "target_url": url}, "idem-1")
    assert first["changed"] is True and first["restored_before"] is None, first.get("msg")
    again = run_module(source, "pg_backup_restore", {"backup": backup_id, "target_url": url}, "idem-2")
    assert again["changed"] is False and again["restore"] is None and again["restored_before"] == backup_id
    assert again["skipped_reason"] == ("%s already holds %s (restored earlier); force=true restores it again"
                                       % (database, backup_id))
    forced = run_module(source, "pg_backup_restore", {"backup": backup_id, "target_url": url, "force": True},
                        "idem-3")
    assert forced.get("failed") is True and forced["step"] == "restore"
    assert forced["msg"] == ("target database %s already holds %d user objects (restored from %s): restore into "
                             "another database or set replace=true to replace it"
                             % (database, first["restore"]["objects"], backup_id))


def test_module_verify_skips_a_recent_enough_verification(source):
    backup_id = source["backup"]["id"]
    cli.run(["verify", backup_id, "--level", "archive"], source["env"])
    skipped = run_module(source, "pg_backup_verify", {"backup": backup_id, "level": "checksum", "max_age": "1d"},
                         "verify-skip")
    assert skipped["changed"] is False and skipped["verification"]["level"] == "archive"
    assert skipped["skipped_reason"].startswith("%s passed an archive verification " % backup_id)
    deeper = run_module(source, "pg_backup_verify", {"backup": backup_id, "level": "restore", "max_age": "1d"},
                        "verify-deeper")
    assert deeper["changed"] is True and deeper["verification"]["level"] == "restore", deeper.get("msg")
