"""Every operation has a plan (a dry run that changes nothing) and a run that the run hook records.

sync and rekey: ``--dry-run`` names exactly what the run then does, and changes nothing; a second dry run
after the run has nothing left to do. restore, sync and rekey write their run record like create does.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest

from tests.integration import cli
from tests.support import load_sample


@pytest.fixture(name="vtt")
def _vtt(pg15):
    name = "vtt_ops_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    yield name
    pg15.drop_db(name)


def _record(backup_dir, job):
    with open(os.path.join(str(backup_dir), "logs", "last-run-%s.json" % job), encoding="utf-8") as handle:
        return json.load(handle)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _dirs, names in os.walk(root) for f in names)


def _digests(backup_dir, backup):
    return {f["name"]: hashlib.sha256(open(os.path.join(str(backup_dir), backup["type"], f["name"]), "rb").read())
            .hexdigest() for f in backup["files"]}


def test_sync_plan_then_run(pg15, vtt, tmp_path):
    backup_dir, second = tmp_path / "backups", tmp_path / "second-disk"
    env = cli.cli_env(pg15.url(vtt), backup_dir, PGPASSFILE=str(pg15.passfile))
    first, schema = cli.create(env, "full"), cli.create(env, "schema")
    env["BACKUP_LOCAL_PATH"] = str(second)  # a destination configured after the backups were taken
    plan = json.loads(cli.run(["sync", "--dry-run", "--json"], env).stdout)
    assert sorted(c["id"] for c in plan["to_copy"]) == sorted([first["id"], schema["id"]])
    assert plan["destinations"] == ["local"] and plan["present"] == 0
    assert not second.exists() or _files(str(second)) == []  # the plan copied nothing
    assert not os.path.exists(os.path.join(str(backup_dir), "logs", "last-run-sync.json"))  # and is no run
    done = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert sorted(c["id"] for c in done["copied"]) == sorted(c["id"] for c in plan["to_copy"])
    assert _record(backup_dir, "sync")["status"] == "ok"
    again = json.loads(cli.run(["sync", "--dry-run", "--json"], env).stdout)
    assert again["to_copy"] == [] and again["present"] == 2
    text = cli.run(["sync", "--dry-run"], env).stdout
    assert text.strip().endswith("0 to copy, 2 already present at local")


def test_rekey_plan_then_run(pg15, vtt, tmp_path):
    backup_dir, keyring = tmp_path / "backups", tmp_path / "keys"
    env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keyring),
                      PGPASSFILE=str(pg15.passfile))
    old_key = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)
    backup = cli.create(env, "full")
    before = _digests(backup_dir, backup)
    new_key = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)
    plan = json.loads(cli.run(["rekey", "--all", "--dry-run", "--json"], env).stdout)
    assert [(r["id"], r["changed"], r["from"], r["to"]) for r in plan] == [
        (backup["id"], True, old_key["key_id"], new_key["key_id"])]
    assert _digests(backup_dir, backup) == before  # the plan re-encrypted nothing
    assert not os.path.exists(os.path.join(str(backup_dir), "logs", "last-run-rekey.json"))
    done = json.loads(cli.run(["rekey", "--all", "--json"], env).stdout)
    assert [(r["id"], r["changed"]) for r in done] == [(backup["id"], True)]
    assert _record(backup_dir, "rekey")["status"] == "ok"
    again = cli.run(["rekey", "--all", "--dry-run"], env).stdout
    assert again.startswith("KEPT    %s: already under key id %s" % (backup["id"], new_key["key_id"]))


def test_restore_is_recorded_like_a_backup(pg15, vtt, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir, PGPASSFILE=str(pg15.passfile))
    backup = cli.create(env, "full")
    copy = vtt + "_copy"
    try:
        cli.run(["restore", backup["id"], "--target-url", pg15.url(copy, with_password=False)], env)
        record = _record(backup_dir, "restore")
        assert record["status"] == "ok" and record["exit_code"] == 0 and record["command"] == "restore"
        failed = cli.run(["restore", "full-nothing-20260101T000000Z"], env, check=False)
        assert failed.returncode == 7  # not found
        record = _record(backup_dir, "restore")
        assert record["status"] == "failed" and record["exit_code"] == 7 and record["step"] == "select"
        assert "full-nothing-20260101T000000Z" in record["error"]
    finally:
        pg15.drop_db(copy)
