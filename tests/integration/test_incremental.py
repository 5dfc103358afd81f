"""Incremental backups on every supported major (issue #12): BACKUP_TYPE=incremental and the pg_backup module;
on 15 (and on 17+ without summarize_wal) the WAL archived since the parent, on 18 with summarize_wal the native
pg_basebackup --incremental chain; chains in ``list``; verify of a WAL link against the archive; retention
keeps whole chains and exactly the WAL the kept backups need. Real servers archiving through our wal-push,
run by the server's OS user (tests/support/archiving.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.integration import cli
from tests.integration.test_pitr import _chown
from tests.support.archiving import Archiving, _write_owned, archiving
from tests.support.compare import assert_same_database

from seawall_pgbackup.repo.walarchive import lsn_to_segno, parse_lsn, wal_name


def _client(arch: Archiving, **extra: str) -> Dict[str, str]:
    """DATABASE_URL without its password (a 0600 pgpass of the server's user has it), client tools of the server."""
    pg = arch.cluster
    passfile = arch.base / "pgpass"
    _write_owned(passfile, "*:*:*:%s:%s\n" % (pg.superuser, pg.password), arch.user)
    env = {"DATABASE_URL": pg.url("postgres", with_password=False), "PGPASSFILE": str(passfile),
           "BACKUP_PG_BIN_DIR": str(pg.bin_dir)}
    env.update(extra)
    return env


def _run(arch: Archiving, env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return arch.cli_as_server(*args, env=env, check=True)


def _json(arch: Archiving, env: Dict[str, str], *args: str) -> Any:
    return json.loads(_run(arch, env, *args, "--json").stdout)


def _failed(arch: Archiving, env: Dict[str, str], *args: str) -> str:
    done = arch.cli_as_server(*args, env=env)
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _drop_wal(arch: Archiving, walname: str) -> None:
    """Delete an archived file by hand (record and data), as a careless operator would."""
    gone = [name for name in os.listdir(arch.wal_folder()) if name.startswith(walname + "-")]
    assert gone, walname
    for name in gone:
        os.unlink(arch.wal_folder() / name)


def _segments(arch: Archiving) -> List[str]:
    return sorted({name[:24] for name in os.listdir(arch.wal_folder())
                   if name.endswith(".json") and len(name.split("-")[0]) == 24})


def _recovering(restored) -> bool:
    try:
        return restored.scalar("SELECT pg_is_in_recovery()") != "f"
    except Exception as exc:  # pylint: disable=broad-except
        raise AssertionError("%s\n%s" % (exc, restored.log_file.read_text(errors="replace")[-3000:])) from None


def _change(arch: Archiving, round_: int) -> None:
    arch.cluster.psql("CREATE TABLE IF NOT EXISTS public.incr_rows (n int PRIMARY KEY, note text); "
                      "INSERT INTO public.incr_rows SELECT g, md5(g::text) FROM generate_series(%d, %d) g"
                      % (round_ * 1000, round_ * 1000 + 999))


def test_wal_method_incremental_on_15_chains_verifies_and_retention_prunes_the_archive():
    with archiving(15) as arch:
        env = _client(arch)
        # a second directory: wal-push uploads each segment there too, create copies each backup
        arch.write_config(dict(arch.config, destinations={"nas": {"enabled": True, "type": "local",
                                                                  "path": str(arch.base / "nas")}}))
        base = _json(arch, env, "create", "--type", "base")
        _change(arch, 0)
        first = _json(arch, dict(env, BACKUP_TYPE="incremental"), "create")  # the timers' way: BACKUP_TYPE
        assert (first["type"], first["method"], first["incremental"], first["parent"]) == (
            "incremental", "wal", "wal", base["id"])
        assert first["files"] == [] and first["start_lsn"] == base["stop_lsn"] and first["timeline"] == 1
        assert parse_lsn(first["stop_lsn"]) > parse_lsn(first["start_lsn"])
        # the switched segment was archived before the manifest was written
        assert wal_name(1, lsn_to_segno(first["stop_lsn"])) in _segments(arch)
        _change(arch, 1)
        second = _json(arch, env, "create", "--type", "incremental")
        assert second["parent"] == first["id"] and second["start_lsn"] == first["stop_lsn"]

        rows = {row["id"]: row for row in _json(arch, env, "list")}
        assert rows[second["id"]]["chain"] == [base["id"], first["id"], second["id"]]
        assert rows[second["id"]]["chain_problem"] is None and rows[second["id"]]["incremental"] == "wal"
        assert rows[base["id"]]["chain"] == [base["id"]] and rows[base["id"]]["parent"] is None
        text = _run(arch, env, "list").stdout
        assert "wal link 2 of %s" % base["id"] in text and "wal link 1 of %s" % base["id"] in text

        [checked] = _json(arch, env, "verify", second["id"], "--level", "archive")
        assert checked["ok"] is True and "contiguous in the archive" in checked["details"], checked
        assert "read back and checked" in checked["details"]

        # Rows committed after the link are not in its restore: its base, then recovery to its stop LSN.
        _change(arch, 5)
        where = arch.base / "restored"
        where.mkdir(mode=0o700)
        _chown(arch, where)
        done = _json(arch, env, "restore", second["id"], "--pgdata", str(where / "data"))
        assert done["chain"] == [base["id"]] and done["wal_link"] == second["id"], done
        assert parse_lsn(done["recovery_target_text"].split()[-1]) <= parse_lsn(second["stop_lsn"])  # its last record
        restored = arch.start_restored(where, "pitr%d" % arch.cluster.major)
        try:
            deadline = time.monotonic() + 90
            while _recovering(restored) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert restored.scalar("SELECT count(*) FROM public.incr_rows") == "2000"
        finally:
            restored.destroy()
        line = _failed(arch, env, "restore", second["id"], "--pgdata", str(where / "data"))
        assert "is not empty" in line  # never over a data directory

        # A new chain; then retention with one of each kind keeps base2's chain and the WAL from its start on.
        base2 = _json(arch, env, "create", "--type", "base")
        # a link of an idle server, right after its base: it still holds a record, and restores
        idle = _json(arch, env, "create", "--type", "incremental")
        assert idle["parent"] == base2["id"] and parse_lsn(idle["stop_lsn"]) > parse_lsn(base2["stop_lsn"])
        where = arch.base / "idle"
        where.mkdir(mode=0o700)
        _chown(arch, where)
        done = _json(arch, env, "restore", idle["id"], "--pgdata", str(where / "data"))
        assert done["chain"] == [base2["id"]] and done["wal_link"] == idle["id"], done
        restored = arch.start_restored(where, "pitr%d" % arch.cluster.major)
        try:
            deadline = time.monotonic() + 90
            while _recovering(restored) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert restored.scalar("SELECT count(*) FROM public.incr_rows") == "3000"
        finally:
            restored.destroy()
        _change(arch, 2)
        third = _json(arch, env, "create", "--type", "incremental")
        assert third["parent"] == idle["id"]
        arch.write_config(dict(arch.config, types={"base": {"retention": {"keep_last": 1}},
                                                   "incremental": {"retention": {"keep_last": 1}}}))
        before = _segments(arch)
        plan = _json(arch, env, "cleanup", "--dry-run")
        assert set(plan["to_delete"]) == {base["id"], first["id"], second["id"]}
        wal = plan["wal"]
        first_kept = wal_name(1, lsn_to_segno(base2["start_lsn"]))
        assert wal["kept_from"] == {"1": first_kept}
        assert wal["needed_by"] == sorted([base2["id"], idle["id"], third["id"]])
        below = [name for name in before if name < first_kept]
        assert below and wal["delete"] >= len(below) and wal["ranges"]
        assert _segments(arch) == before  # a dry run changes nothing
        text = _run(arch, env, "cleanup", "--dry-run").stdout
        assert "WAL archive: would remove %d of" % wal["delete"] in text and "timeline 1: " in text

        done = _json(arch, env, "cleanup")
        assert done["wal_removed"] == wal["delete"]
        after = _segments(arch)
        assert after and min(after) == first_kept and set(after) == {n for n in before if n >= first_kept}
        [checked] = _json(arch, env, "verify", third["id"], "--level", "archive")
        assert checked["ok"] is True, checked
        assert _json(arch, env, "cleanup", "--dry-run")["wal"]["delete"] == 0  # a second run removes nothing

        # A segment deleted by hand inside the link's range: verify finds it and records the link bad.
        inside = wal_name(1, lsn_to_segno(third["start_lsn"]))
        _drop_wal(arch, inside)
        proc = arch.cli_as_server("verify", third["id"], "--level", "checksum", "--json", env=env)
        [bad] = json.loads(proc.stdout)
        assert proc.returncode != 0 and bad["ok"] is False and inside in bad["details"], bad
        rows = {row["id"]: row for row in _json(arch, env, "list", "--all")}
        assert rows[third["id"]]["good"] is False
        # the copy at the destination is verified against the destination's archive, which still holds it
        [remote] = _json(arch, env, "verify", third["id"], "--destination", "nas", "--level", "archive")
        assert remote["ok"] is True and "contiguous in the archive" in remote["details"], remote

        # A role that may not switch segments: one line saying what it needs, nothing written.
        arch.cluster.psql("CREATE ROLE incr_noswitch LOGIN REPLICATION PASSWORD 'incr-n0switch'")
        _write_owned(arch.base / "pgpass", "*:*:*:%s:%s\n*:*:*:incr_noswitch:incr-n0switch\n"
                     % (arch.cluster.superuser, arch.cluster.password), arch.user)
        listed = sorted(os.listdir(arch.backup_dir / "incremental"))
        line = _failed(arch, dict(env, DATABASE_URL=arch.cluster.url("postgres", user="incr_noswitch",
                                                                     with_password=False)),
                       "create", "--type", "incremental")
        assert "role incr_noswitch needs EXECUTE on pg_switch_wal()" in line and "n0switch" not in line
        assert sorted(os.listdir(arch.backup_dir / "incremental")) == listed


def test_incremental_on_18_native_chain_restores_equal_then_wal_method_without_summaries():
    with archiving(18) as arch:
        pg = arch.cluster
        env = _client(arch)
        pg.create_db("incr18")
        from tests.support import load_sample  # pylint: disable=import-outside-toplevel
        load_sample(pg, "incr18", create=False)
        env = dict(env, DATABASE_URL=pg.url("incr18", with_password=False))
        base = _json(arch, env, "create", "--type", "base")
        links = []
        for round_ in range(3):
            pg.psql("CREATE TABLE IF NOT EXISTS public.chain_rows (n int, note text); INSERT INTO public.chain_rows "
                    "SELECT g, md5(g::text) FROM generate_series(%d, %d) g" % (round_ * 1000, round_ * 1000 + 999),
                    db="incr18")
            links.append(_json(arch, dict(env, BACKUP_TYPE="incremental"), "create"))
        assert [(link["method"], link["incremental"]) for link in links] == [("physical", "native")] * 3
        assert [link["parent"] for link in links] == [base["id"]] + [link["id"] for link in links[:2]]
        rows = {row["id"]: row for row in _json(arch, env, "list")}
        assert rows[links[-1]["id"]]["chain"] == [base["id"]] + [link["id"] for link in links]
        assert "native link 3 of %s" % base["id"] in _run(arch, env, "list").stdout

        target = Path(tempfile.mkdtemp(prefix="seawall-incr18-")) / "data"
        os.chmod(target.parent, 0o755)
        if os.geteuid() == 0:  # the restore runs as the server's user, who owns the repository
            os.chown(target.parent, arch.user.pw_uid, arch.user.pw_gid)
        try:
            done = json.loads(_run(arch, env, "restore", links[-1]["id"], "--pgdata", str(target), "--json").stdout)
            assert done["chain"] == [base["id"]] + [link["id"] for link in links]
            from tests.integration.test_physical import _start_restored  # pylint: disable=import-outside-toplevel
            restored = _start_restored(pg, target.parent)
            try:
                assert restored.scalar("SELECT count(*) FROM public.chain_rows", db="incr18") == "3000"
                assert_same_database(pg, "incr18", restored, "incr18")
            finally:
                restored.destroy()
        finally:
            shutil.rmtree(target.parent, ignore_errors=True)

        # summarize_wal off (17+): the host gets WAL-method links, on the newest link of any method.
        pg.psql("ALTER SYSTEM SET summarize_wal = off")
        pg.reload()
        walled = _json(arch, env, "create", "--type", "incremental")
        assert (walled["method"], walled["incremental"], walled["parent"]) == ("wal", "wal", links[-1]["id"])
        assert walled["start_lsn"] == links[-1]["stop_lsn"]
        [checked] = _json(arch, env, "verify", walled["id"], "--level", "archive")
        assert checked["ok"] is True, checked


def test_without_archiving_or_summaries_incremental_is_refused_in_one_line(pg15, tmp_path):
    env = cli.cli_env(pg15.url("postgres"), tmp_path / "backups", BACKUP_TYPE="incremental")
    assert "take a base backup first" in cli.error_line(cli.run(["create"], env, check=False))
    base = cli.create(env, "base")
    line = cli.error_line(cli.run(["create"], env, check=False))
    assert "need WAL archiving (archive_mode = on" in line and "wal-push" in line
    assert [b["id"] for b in cli.listing(env)] == [base["id"]]


def test_the_module_takes_incremental_backups_with_the_max_age_contract(summarizing, tmp_path):
    # pylint: disable-next=import-outside-toplevel
    from tests.integration.test_frontend_defaults import ANSIBLE_PLAYBOOK, run_module
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-playbook is not installed (make setup-dev)")
    env = cli.cli_env(summarizing.url("postgres"), tmp_path / "backups", PGPASSFILE=str(summarizing.passfile),
                      BACKUP_JOBS="1")
    source = {"env": env, "root": tmp_path}
    refused = run_module(source, "pg_backup", {"type": "incremental"}, "incr0")
    assert refused.get("failed") and "take a base backup first" in refused["msg"]
    base = run_module(source, "pg_backup", {"type": "base"}, "base")
    assert base["changed"] is True, base
    first = run_module(source, "pg_backup", {"type": "incremental", "max_age": "1h"}, "incr1")
    assert first["changed"] is True and not first.get("failed"), first
    made = first["backup"]
    assert (made["type"], made["incremental"], made["parent"]) == ("incremental", "native", base["backup"]["id"])
    again = run_module(source, "pg_backup", {"type": "incremental", "max_age": "1h"}, "incr2")
    assert again["changed"] is False and "younger than max_age" in again["skipped_reason"]
    assert again["backup"]["id"] == made["id"]
    forced = run_module(source, "pg_backup", {"type": "incremental", "max_age": "1h", "force": True}, "incr3")
    assert forced["changed"] is True and forced["backup"]["parent"] == made["id"]
