"""Physical base backups (issue #12, first slice): ``create --type base`` (pg_basebackup), list, verify (checksum,
archive = pg_verifybackup), ``restore --pgdata`` into an empty directory, and the restored cluster starts and holds
the same database. On PostgreSQL 15 and 18, real servers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration import cli
from tests.support.compare import assert_same_database
from tests.support.pgcluster import PgCluster

LSN = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")


def _start_restored(source: PgCluster, base_dir: Path) -> PgCluster:
    """A server on the restored ``base_dir/data`` (the tests chown it to the server's OS user, not the engine)."""
    restored = PgCluster(source.bin_dir, name="restored%d" % source.major, base_dir=base_dir, password=source.password)
    os.chmod(base_dir, 0o755)
    for folder in (restored.socket_dir, restored.log_file.parent):
        folder.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        uid, gid = restored._pw.pw_uid, restored._pw.pw_gid  # pylint: disable=protected-access
        for directory, dirs, files in os.walk(base_dir):
            for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
                os.lchown(name, uid, gid)
    restored._initialized = True  # pylint: disable=protected-access
    return restored.start()


def _error(proc) -> str:
    return cli.error_line(proc)


def test_base_backup_lists_verifies_restores_and_starts(sample_db, tmp_path):
    pg = sample_db.cluster
    env = cli.cli_env(sample_db.url, tmp_path / "backups")
    made = cli.create(env, "base")
    assert made["type"] == "base" and made["method"] == "physical" and made["id"].startswith("base-")
    assert LSN.match(made["start_lsn"]) and LSN.match(made["stop_lsn"]) and made["timeline"] == 1
    assert made["server"]["major"] == pg.major and made["server"]["system_identifier"]
    [entry] = made["files"]
    assert entry["role"] == "base" and entry["format"] == "tar" and entry["name"] == made["id"] + ".base.tar.gz"
    assert entry["raw_size"] > entry["size"] > 0
    assert sorted(os.listdir(tmp_path / "backups" / "base")) == sorted([entry["name"], made["id"] + ".json"])

    [row] = cli.listing(env)
    assert (row["id"], row["type"], row["start_lsn"], row["stop_lsn"], row["timeline"], row["method"]) == (
        made["id"], "base", made["start_lsn"], made["stop_lsn"], 1, "physical")
    text = cli.run(["list", "--type", "base"], env).stdout
    assert made["id"] in text and " base " in text
    assert "WAL %s..%s timeline 1" % (made["start_lsn"], made["stop_lsn"]) in text
    assert cli.run(["list", "--type", "full", "--json"], env).stdout.strip() == "[]"

    [checked] = json.loads(cli.run(["verify", made["id"], "--level", "archive", "--json"], env).stdout)
    assert checked["ok"] is True, checked
    assert "pg_verifybackup" in checked["details"] and made["stop_lsn"] in checked["details"]
    assert not any((tmp_path / "backups" / ".scratch").iterdir())  # the extracted copy is gone
    proc = cli.run(["verify", made["id"], "--level", "restore"], env, check=False)
    assert "not available yet for base backups" in _error(proc)
    assert cli.listing(env)[0]["good"] is True  # the refusal is not recorded as a bad backup

    # A non-empty data directory is never overwritten: one line, nothing written.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine\n")
    proc = cli.run(["restore", made["id"], "--pgdata", str(busy)], env, check=False)
    assert "is not empty" in _error(proc)
    assert os.listdir(busy) == ["keep.txt"] and (busy / "keep.txt").read_text() == "mine\n"
    proc = cli.run(["restore", "latest", "--type", "full", "--pgdata", str(tmp_path / "nope")], env, check=False)
    assert "no good full backup" in _error(proc) and not (tmp_path / "nope").exists()

    # The server's OS user must reach it: outside pytest's private tmp_path (removed below).
    target = Path(tempfile.mkdtemp(prefix="seawall-restored-")) / "data"
    try:
        _restore_and_start(pg, sample_db, env, made, target)
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


def _restore_and_start(pg, sample_db, env, made, target: Path) -> None:
    done = json.loads(cli.run(["restore", "latest", "--type", "base", "--pgdata", str(target), "--json"], env).stdout)
    assert done["backup_id"] == made["id"] and done["kind"] == "base" and done["pgdata"] == str(target)
    assert done["files"] > 100
    assert (target / "PG_VERSION").read_text().strip() == str(pg.major)
    assert (target / "backup_label").is_file() and any(n.startswith("0000") for n in os.listdir(target / "pg_wal"))
    assert not (target / "postgresql.auto.conf").read_text().count("restore_command")  # nothing of ours written
    assert os.stat(target).st_mode & 0o777 == 0o700

    restored = _start_restored(pg, target.parent)
    try:
        assert restored.scalar("SELECT pg_is_in_recovery()") == "f"
        assert_same_database(pg, sample_db.name, restored, sample_db.name)
    finally:
        restored.destroy()


def test_encrypted_base_backup_from_a_destination_and_corruption(pg18, tmp_path):
    from tests.support import load_sample  # pylint: disable=import-outside-toplevel
    name = "phys_enc"
    load_sample(pg18, name)
    try:
        _encrypted(pg18, name, tmp_path)
    finally:
        pg18.drop_db(name)


def _encrypted(pg18: PgCluster, name: str, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backup": {"destinations": {
        "nas": {"enabled": True, "type": "local", "path": str(tmp_path / "nas")}}}}))
    keyring = tmp_path / "keys"
    env = cli.cli_env(pg18.url(name), tmp_path / "backups", BACKUP_ENCRYPTION="true",
                      BACKUP_ENCRYPTION_KEYRING=str(keyring), BACKUP_CONFIG=str(config))
    cli.run(["keygen", "--keyring", str(keyring), "--json"], env)
    made = cli.create(env, "base")
    [entry] = made["files"]
    assert entry["name"].endswith(".base.tar.gz.enc") and made["encryption"]["algorithm"] == "aes-256-gcm"
    stored = tmp_path / "backups" / "base" / entry["name"]
    assert b"PG_VERSION" not in stored.read_bytes()[:1 << 20]  # sealed, not a readable tar
    assert json.loads(cli.run(["verify", made["id"], "--level", "archive", "--json"], env).stdout)[0]["ok"] is True

    # The copy at a directory destination restores through the catalog's scratch copy.
    remote = json.loads(cli.run(["list", "--destination", "nas", "--json"], env).stdout)
    assert [b["id"] for b in remote] == [made["id"]]
    from_nas = tmp_path / "from-nas"
    cli.run(["restore", "latest", "--type", "base", "--destination", "nas", "--pgdata", str(from_nas)], env)
    assert (from_nas / "PG_VERSION").read_text().strip() == "18" and (from_nas / "global" / "pg_control").is_file()

    # rekey to a new key rewrites the tar (verified before the old copy goes); it still verifies and restores.
    cli.run(["keygen", "--keyring", str(keyring), "--json"], env)
    cli.run(["rekey", made["id"]], env)
    [rekeyed] = cli.listing(env)
    assert rekeyed["encryption"]["key_id"] != made["encryption"]["key_id"]
    assert json.loads(cli.run(["verify", made["id"], "--level", "archive", "--json"], env).stdout)[0]["ok"] is True

    # One byte changed in the stored tar: verify marks it bad, restore refuses before writing anything.
    [path] = rekeyed["files"]
    stored = Path(path)
    assert stored.parent == tmp_path / "backups" / "base" and stored.name.startswith(made["id"] + ".base.tar.gz")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    proc = cli.run(["verify", made["id"], "--level", "checksum"], env, check=False)
    assert proc.returncode != 0 and "sha256" in proc.stdout + proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli.run(["restore", made["id"], "--pgdata", str(empty)], env, check=False)
    assert "sha256" in _error(proc) and os.listdir(empty) == []
    proc = cli.run(["restore", made["id"], "--pgdata", str(tmp_path / "absent")], env, check=False)
    assert proc.returncode != 0 and not (tmp_path / "absent").exists()


def test_base_backup_needs_a_replication_role(pg15, tmp_path):
    pg15.create_role("norepl_phys", password="s3cret-norepl")
    try:
        env = cli.cli_env(pg15.url("postgres", user="norepl_phys"), tmp_path / "backups")
        proc = cli.run(["create", "--type", "base"], env, check=False)
        line = _error(proc)
        assert "needs REPLICATION (or superuser)" in line and "norepl_phys" in line and "s3cret" not in line
        assert cli.listing(env) == []
        assert os.listdir(tmp_path / "backups" / "base") == []
    finally:
        pg15.psql("DROP ROLE norepl_phys")


def test_a_killed_base_backup_leaves_nothing_listed_and_the_next_run_cleans_up(pg15, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    marker = work / "paused"
    env = cli.cli_env(pg15.url("postgres"), tmp_path / "backups", BACKUP_LEFTOVER_GRACE="1s",
                      SEAWALL_TEST_PAUSE="base-streaming", SEAWALL_TEST_PAUSE_FILE=str(marker),
                      SEAWALL_TEST_PAUSE_SECONDS="60")
    proc = subprocess.Popen(cli.COMMAND + ["create", "--type", "base"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the run never reached base-streaming"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = os.listdir(tmp_path / "backups" / "base")
    assert left and all(n.startswith("base-postgres-") and n.endswith(".partial") for n in left), left
    calm = {k: v for k, v in env.items() if not k.startswith("SEAWALL_TEST_PAUSE")}
    assert cli.listing(calm) == []
    time.sleep(1.2)
    made = cli.create(calm, "base")
    assert sorted(os.listdir(tmp_path / "backups" / "base")) == sorted([made["files"][0]["name"], made["id"] + ".json"])
    assert [b["id"] for b in cli.listing(calm)] == [made["id"]]


def test_the_modules_take_and_restore_base_backups_idempotently(pg15, tmp_path):
    # pylint: disable-next=import-outside-toplevel
    from tests.integration.test_frontend_defaults import ANSIBLE_PLAYBOOK, run_module
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-playbook is not installed (make setup-dev)")
    env = cli.cli_env(pg15.url("postgres"), tmp_path / "backups", PGPASSFILE=str(pg15.passfile), BACKUP_JOBS="1")
    source = {"env": env, "root": tmp_path}
    first = run_module(source, "pg_backup", {"type": "base", "max_age": "1h"}, "base1")
    assert first["changed"] is True and not first.get("failed"), first
    backup = first["backup"]
    assert backup["type"] == "base" and backup["method"] == "physical" and LSN.match(backup["start_lsn"])
    assert "--pgdata" in first["restore_command"]
    again = run_module(source, "pg_backup", {"type": "base", "max_age": "1h"}, "base2")
    assert again["changed"] is False and "younger than max_age" in again["skipped_reason"]
    listed = run_module(source, "pg_backup_info", {"type": "base"}, "info")
    assert [(b["id"], b["stop_lsn"], b["timeline"]) for b in listed["backups"]] == [
        (backup["id"], backup["stop_lsn"], 1)]

    target = tmp_path / "restored"
    done = run_module(source, "pg_backup_restore", {"type": "base", "pgdata": str(target)}, "restore1")
    assert done["changed"] is True and not done.get("failed"), (done.get("msg"), done.get("module_stderr"))
    assert done["restore"]["backup_id"] == backup["id"] and done["restore"]["pgdata"] == str(target)
    assert (target / "PG_VERSION").is_file()
    same = run_module(source, "pg_backup_restore", {"type": "base", "pgdata": str(target)}, "restore2")
    assert same["changed"] is False and "already holds %s" % backup["id"] in same["skipped_reason"], same
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    refused = run_module(source, "pg_backup_restore", {"type": "base", "pgdata": str(busy)}, "restore3")
    assert refused.get("failed") and "is not empty" in refused["msg"] and os.listdir(busy) == ["x"]
    wrong = run_module(source, "pg_backup_restore", {"pgdata": str(tmp_path / "y"), "replace": True}, "restore4")
    assert wrong.get("failed") and "replace does not apply with pgdata" in wrong["msg"]
    checked = run_module(source, "pg_backup_verify", {"type": "base", "level": "archive"}, "verify")
    assert checked["changed"] is True and not checked.get("failed"), checked.get("msg")


def test_incremental_is_refused_on_15_without_archiving(pg15, tmp_path):
    env = cli.cli_env(pg15.url("postgres"), tmp_path / "backups")
    cli.create(env, "base")
    proc = cli.run(["create", "--type", "incremental"], env, check=False)
    assert "need WAL archiving" in _error(proc)
    assert [b["type"] for b in cli.listing(env)] == ["base"]


def test_an_incremental_chain_on_18_restores_equal_and_a_broken_link_is_refused(summarizing, tmp_path):
    from tests.support import load_sample  # pylint: disable=import-outside-toplevel
    pg = summarizing
    name = "phys_incr"
    load_sample(pg, name)
    target = Path(tempfile.mkdtemp(prefix="seawall-chain-")) / "data"
    try:
        env = cli.cli_env(pg.url(name), tmp_path / "backups")
        base = cli.create(env, "base")
        links = []
        for round_ in range(3):
            pg.psql("CREATE TABLE IF NOT EXISTS public.chain_rows (n int, note text); "
                    "INSERT INTO public.chain_rows SELECT g, md5(g::text) FROM generate_series(%d, %d) g"
                    % (round_ * 1000, round_ * 1000 + 999), db=name)
            links.append(cli.create(env, "incremental"))
        assert [link["parent"] for link in links] == [base["id"]] + [link["id"] for link in links[:2]]
        assert all(link["method"] == "physical" and link["type"] == "incremental" for link in links)
        base_size = base["files"][0]["size"]
        assert all(link["files"][0]["size"] < base_size for link in links)  # only the changes (and their WAL)
        [checked] = json.loads(cli.run(["verify", links[-1]["id"], "--level", "archive", "--json"], env).stdout)
        assert checked["ok"] is True, checked

        done = json.loads(cli.run(["restore", "latest", "--type", "incremental", "--pgdata", str(target), "--json"],
                                  env).stdout)
        assert done["chain"] == [base["id"]] + [link["id"] for link in links]
        restored = _start_restored(pg, target.parent)
        try:
            assert restored.scalar("SELECT count(*) FROM public.chain_rows", db=name) == "3000"
            assert_same_database(pg, name, restored, name)
        finally:
            restored.destroy()

        # Every backup at once (the default level, archive), and retention keeps the whole chain.
        everything = json.loads(cli.run(["verify", "--json"], env).stdout)
        assert sorted(r["id"] for r in everything) == sorted([base["id"]] + [link["id"] for link in links])
        assert all(r["ok"] for r in everything), everything
        plan = json.loads(cli.run(["cleanup", "--dry-run", "--json"], env).stdout)
        assert plan["to_delete"] == [] and set(plan["kept"]) >= {base["id"]} | {link["id"] for link in links}

        # A missing link: refused, naming it, before anything is written.
        empty = tmp_path / "empty"
        manifest = tmp_path / "backups" / "incremental" / (links[0]["id"] + ".json")
        aside = tmp_path / "aside.json"
        manifest.rename(aside)
        proc = cli.run(["restore", links[2]["id"], "--pgdata", str(empty)], env, check=False)
        assert links[0]["id"] in _error(proc) and not empty.exists()
        aside.rename(manifest)

        # A corrupted middle link: verify finds it, restore refuses before writing anything.
        middle = tmp_path / "backups" / "incremental" / links[1]["files"][0]["name"]
        data = bytearray(middle.read_bytes())
        data[len(data) // 3] ^= 0x40
        middle.write_bytes(bytes(data))
        empty = tmp_path / "empty"
        proc = cli.run(["restore", links[2]["id"], "--pgdata", str(empty)], env, check=False)
        line = _error(proc)
        assert links[1]["id"] in line and "sha256" in line and not empty.exists()
        proc = cli.run(["verify", links[1]["id"], "--level", "checksum"], env, check=False)
        assert proc.returncode != 0 and "sha256" in proc.stdout + proc.stderr
        proc = cli.run(["restore", links[2]["id"], "--pgdata", str(empty)], env, check=False)
        assert links[1]["id"] in _error(proc) and not empty.exists()  # now marked bad: not restorable
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)
        pg.drop_db(name)


def test_incremental_needs_a_base_and_summarize_wal_on_18(pg18, tmp_path):
    assert pg18.scalar("SHOW summarize_wal") == "off"
    env = cli.cli_env(pg18.url("postgres"), tmp_path / "backups")
    proc = cli.run(["create", "--type", "incremental"], env, check=False)
    assert "take a base backup first" in _error(proc)
    cli.create(env, "base")
    proc = cli.run(["create", "--type", "incremental"], env, check=False)
    assert "summarize_wal = on" in _error(proc)
    assert [b["type"] for b in cli.listing(env)] == ["base"]
    assert os.listdir(tmp_path / "backups" / "incremental") == []
    scratch = tmp_path / "backups" / ".scratch"  # refused before pg_basebackup: no scratch made, none left
    assert not scratch.exists() or not any(scratch.iterdir())


def test_a_cluster_with_another_tablespace_is_refused_in_one_line(pg15, tmp_path):
    location = Path(tempfile.mkdtemp(prefix="seawall-tblspc-"))
    os.chmod(location, 0o700)
    if os.geteuid() == 0:
        os.chown(location, pg15._pw.pw_uid, pg15._pw.pw_gid)  # pylint: disable=protected-access
    pg15.psql("CREATE TABLESPACE phys_extra LOCATION '%s'" % location)
    try:
        env = cli.cli_env(pg15.url("postgres"), tmp_path / "backups")
        proc = cli.run(["create", "--type", "base"], env, check=False)
        assert "tablespaces other than pg_default/pg_global are not supported yet" in _error(proc)
        assert cli.listing(env) == [] and os.listdir(tmp_path / "backups" / "base") == []
    finally:
        pg15.psql("DROP TABLESPACE phys_extra")
        shutil.rmtree(location, ignore_errors=True)
