"""AWX the way AWX runs it (issue 13): the built collection installed into a fresh collections path (not this
checkout), a project directory whose playbooks import the collection's, an inventory, and a credential injected as
AWX injects a custom credential type (its secret in the extra vars file, the rest in the environment file), run
through ansible-runner, the library AWX runs jobs with. Checked from the artifacts: job status, changed counts per
run (a second run changes nothing), and no secret anywhere in the event stream or stdout."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support import load_sample
from tests.support.collection import build_collection, install_collection

ansible_runner = pytest.importorskip("ansible_runner")

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The collection built and installed as a user installs a Galaxy tarball: a collections path of its own."""
    work = tmp_path_factory.mktemp("awx-collection")
    tarball = build_collection(BIN / "ansible-galaxy", work)
    collections = work / "collections"
    install_collection(BIN / "ansible-galaxy", tarball, collections)
    return collections


def _job(private: Path, playbook: str, extravars: dict) -> "ansible_runner.Runner":
    (private / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    runner = ansible_runner.run(private_data_dir=str(private), playbook=playbook, quiet=True,
                                ident="%s-%s" % (playbook.split(".")[0], uuid.uuid4().hex[:6]))
    return runner


def _results(runner, action: str) -> list:
    """The results of ``action``'s tasks in the event stream (each item of a loop)."""
    found = []
    for event in runner.events:
        data = event.get("event_data", {})
        if event.get("event") == "runner_item_on_ok" and data.get("resolved_action") == action:
            found.append(data["res"])
        elif event.get("event") == "runner_on_ok" and data.get("resolved_action") == action \
                and "results" not in data.get("res", {}):
            found.append(data["res"])
    return found


def _changed(runner) -> int:
    return sum((runner.stats or {}).get("changed", {}).values())


def _no_secret(runner, private: Path, secret: str) -> None:
    """The secret is in no event, no stdout and no other artifact of the job."""
    for event in runner.events:
        assert secret not in json.dumps(event), event.get("event")
    artifacts = private / "artifacts" / runner.config.ident
    for path in artifacts.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_backup_restore_and_drill_through_ansible_runner(pg15, installed, tmp_path):
    name = "awx_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    secret = "awx-%s" % uuid.uuid4().hex
    role = "awx_%s" % uuid.uuid4().hex[:6]
    pg15.create_role(role, password=secret, superuser=True)
    private = tmp_path / "job"
    for folder in ("project", "inventory", "env"):
        (private / folder).mkdir(parents=True)
    for playbook in ("backup", "restore", "dr_drill"):  # a user's project: the collection's playbooks, imported
        (private / "project" / ("%s.yml" % playbook)).write_text(yaml.safe_dump([
            {"name": "seawall.pgbackup.%s" % playbook,
             "ansible.builtin.import_playbook": "seawall.pgbackup.%s" % playbook}]))
    (private / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"postgresql": {"hosts": {"db-1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    backup_dir = tmp_path / "backups"
    # What AWX writes for a job: the EE's collections path and the credential's environment injectors
    # (env/envvars); the credential's secret goes through its extra_vars injector (env/extravars, below).
    (private / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_NOCOLOR": "1", "BACKUP_DIR": str(backup_dir),
        "PATH": "%s:%s" % (BIN, os.environ.get("PATH", "")), "HOME": os.environ.get("HOME", "/root")}))
    (private / "env" / "settings").write_text(yaml.safe_dump({"idle_timeout": 600, "job_timeout": 900}))
    url = "postgresql://%s:%s@%s:%d/%s" % (role, secret, pg15.host, pg15.port, name)
    copy = "%s_copy" % name
    credential = {"pgbackup_database_url": url}
    try:
        first = _job(private, "backup.yml", dict(credential, pgbackup_run_types=["full"]))
        assert (first.status, first.rc) == ("successful", 0), first.stdout.read()
        assert _changed(first) >= 1 and (first.stats or {}).get("failures") == {}
        taken = _results(first, "seawall.pgbackup.pg_backup")
        assert taken and taken[0]["changed"] is True and taken[0]["backup_dir"] == str(backup_dir), taken
        _no_secret(first, private, secret)
        again = _job(private, "backup.yml", dict(credential, pgbackup_run_types=["full"]))
        assert again.status == "successful" and _changed(again) == 0  # max_age 20h: the backup is fresh

        target = "postgresql://%s:%s@%s:%d/%s" % (role, secret, pg15.host, pg15.port, copy)
        pg15.create_db(copy)
        restored = _job(private, "restore.yml", dict(credential, pgbackup_restore_target_url=target))
        assert restored.status == "successful" and _changed(restored) >= 1, restored.stdout.read()
        assert pg15.scalar("SELECT count(*) FROM public.players", db=copy) == \
            pg15.scalar("SELECT count(*) FROM public.players", db=name)
        _no_secret(restored, private, secret)
        same = _job(private, "restore.yml", dict(credential, pgbackup_restore_target_url=target))
        assert same.status == "successful" and _changed(same) == 0  # the target holds that backup already

        drilled = _job(private, "dr_drill.yml", credential)
        assert drilled.status == "successful", drilled.stdout.read()
        drills = _results(drilled, "seawall.pgbackup.pg_backup_verify")
        assert drills and drills[0]["verification"]["ok"] is True, drills
        _no_secret(drilled, private, secret)
        assert (backup_dir / "logs" / "drill-latest.json").exists()
    finally:
        pg15.drop_db(copy) if pg15.scalar("SELECT count(*) FROM pg_database WHERE datname = '%s'" % copy,
                                          db="postgres") == "1" else None
        pg15.drop_db(name)
        pg15.psql("DROP ROLE IF EXISTS %s" % role)
