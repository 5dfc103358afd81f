"""Point-in-time restore (issue #12) on PostgreSQL 15 and 18, real servers archiving through our wal-push.

Batches committed at known times with segment switches between; ``restore --pgdata DIR --target-*`` rebuilds a
data directory from the base backup and the archive, the restored server is started and holds exactly what the
target says; an unreachable target is refused before DIR is touched.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.support.archiving import Archiving, archiving
from tests.support.pgcluster import PgCluster

SERVER_TIME = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _batch(pg: PgCluster, number: int) -> str:
    """Commit batch ``number`` (100 rows) and return its xid."""
    return pg.scalar("BEGIN; INSERT INTO pitr_rows SELECT %d, g, md5(g::text) FROM generate_series(1, 100) g; "
                     "SELECT txid_current(); COMMIT" % number, db="pitr") or ""


def _chown(arch: Archiving, path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, arch.user.pw_uid, arch.user.pw_gid)


def _restore(arch: Archiving, env: Dict[str, str], where: Path, *target: str, check: bool = True):
    done = arch.cli_as_server("restore", "latest", "--pgdata", str(where / "data"), "--json", *target, env=env,
                              check=check)
    return json.loads(done.stdout) if check else done


def _batches(restored: PgCluster) -> List[int]:
    rows = restored.psql("SELECT batch, count(*) FROM pitr_rows GROUP BY batch ORDER BY batch", db="pitr")
    assert all(count == "100" for _b, count in rows), rows  # whole transactions only
    return [int(batch or 0) for batch, _c in rows]


def _recovered(arch: Archiving, env: Dict[str, str], name: str, *target: str) -> Dict:
    where = arch.base / name
    where.mkdir(mode=0o700)
    _chown(arch, where)
    done = _restore(arch, env, where, *target)
    data = where / "data"
    auto = (data / "postgresql.auto.conf").read_text()
    assert "restore_command = '" in auto and "wal-fetch --spool pg_wal/seawall-prefetch %f %p'" in auto
    assert (data / "recovery.signal").is_file()
    restored = arch.start_restored(where, "pitr%d" % arch.cluster.major)
    try:
        deadline = time.monotonic() + 90  # hot standby answers before recovery has ended and promoted
        while restored.scalar("SELECT pg_is_in_recovery()") != "f" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert restored.scalar("SELECT pg_is_in_recovery()") == "f", restored.log_file.read_text()[-3000:]
        done["batches"] = _batches(restored)
    finally:
        restored.destroy()
    return done


def _error(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("major", [15, 18])
def test_point_in_time_restore_to_time_name_lsn_xid_and_latest(major):
    with archiving(major) as arch:
        _scenario(arch)


def _scenario(arch: Archiving) -> None:
    pg = arch.cluster
    pg.create_db("pitr")
    pg.psql("CREATE TABLE pitr_rows (batch int, n int, note text)", db="pitr")
    env = {"DATABASE_URL": pg.url("pitr")}
    base = json.loads(arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True).stdout)
    assert base["type"] == "base"

    _batch(pg, 1)
    after_one = pg.scalar("SELECT pg_current_wal_insert_lsn()") or ""
    arch.switch_wal()
    time.sleep(1.1)
    between = pg.scalar(SERVER_TIME) or ""
    time.sleep(1.1)
    xid_two = _batch(pg, 2)
    pg.psql("SELECT pg_create_restore_point('after two')")
    arch.switch_wal()
    _batch(pg, 3)
    switched = pg.scalar("SELECT pg_switch_wal()") or ""  # where the switch record ends: in the archived segment
    arch.wait_archived(pg.scalar("SELECT pg_walfile_name('%s')" % switched) or "")

    # Unreachable targets: one line naming the target and what the archive reaches, nothing written.
    absent = arch.base / "absent"
    empty = arch.base / "empty"
    empty.mkdir(mode=0o700)
    _chown(arch, empty)
    future = "2999-01-01T00:00:00Z"
    for target, words in ((["--target-time", future], "no commit after that time"),
                          (["--target-name", "never made"], "no restore point of that name"),
                          (["--target-lsn", "FF/0"], "the archive reaches"),
                          (["--target-xid", "4000000000"], "no commit or abort of that xid"),
                          (["--target-time", "2000-01-01T00:00:00Z"], "no good base backup ended before it"),
                          # the next record is in the next segment, not archived yet (archive_timeout is 60 s)
                          (["--target-lsn", switched], "with no WAL record at or after it yet")):
        for where in (absent, empty):
            proc = arch.cli_as_server("restore", "latest", "--pgdata", str(where), *target, env=env)
            line = _error(proc)
            assert "cannot restore to" in line and words in line, line
            assert not absent.exists() and os.listdir(empty) == []
    assert "time 2999-01-01T00:00:00" in _error(arch.cli_as_server("restore", "--pgdata", str(absent), "--target-time",
                                                                   future, env=env))
    proc = arch.cli_as_server("restore", "--pgdata", str(absent), "--target-time", between, "--target-lsn", after_one,
                              env=env)
    assert proc.returncode == 2 and not absent.exists()  # argparse: not allowed together

    to_time = _recovered(arch, env, "time", "--target-time", between)
    assert to_time["batches"] == [1], to_time
    assert to_time["backup_id"] == base["id"] and to_time["recovery_target"] == "time"
    assert to_time["stop_record"].startswith("commit of xid %s" % xid_two)  # recovery stops before batch 2

    assert _recovered(arch, env, "name", "--target-name", "after two")["batches"] == [1, 2]
    assert _recovered(arch, env, "lsn", "--target-lsn", after_one)["batches"] == [1]
    assert _recovered(arch, env, "xid", "--target-xid", xid_two)["batches"] == [1, 2]
    latest = _recovered(arch, env, "latest", "--target-latest")
    assert latest["batches"] == [1, 2, 3] and latest["stop_record"] is None
    assert _recovered(arch, env, "immediate", "--target-immediate")["batches"] == []


def test_a_missing_segment_is_a_gap_that_refuses_latest():
    with archiving(15) as arch:
        pg = arch.cluster
        pg.create_db("pitr")
        pg.psql("CREATE TABLE pitr_rows (batch int, n int, note text)", db="pitr")
        env = {"DATABASE_URL": pg.url("pitr")}
        arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True)
        _batch(pg, 1)
        gone = arch.switch_wal()
        _batch(pg, 2)
        arch.wait_archived(arch.switch_wal())
        for name in os.listdir(arch.wal_folder()):
            if name.startswith(gone + "-") and name.endswith(".json"):
                os.unlink(arch.wal_folder() / name)
        target = arch.base / "latest"
        line = _error(arch.cli_as_server("restore", "--pgdata", str(target), "--target-latest", env=env))
        assert "cannot restore to the end of the archive (latest)" in line and gone in line and not target.exists()
        line = _error(arch.cli_as_server("restore", "--pgdata", str(target), "--target-name", "x", env=env))
        assert "cannot restore to restore point 'x'" in line and not target.exists()
        line = _error(arch.cli_as_server("restore", "--target-latest", env=env))
        assert "a recovery target goes with a data directory" in line


def test_the_restore_module_takes_recovery_targets_idempotently(pg15, tmp_path):
    # pylint: disable-next=import-outside-toplevel
    from tests.integration.test_frontend_defaults import ANSIBLE_PLAYBOOK, run_module
    from tests.integration import cli  # pylint: disable=import-outside-toplevel
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-playbook is not installed (make setup-dev)")
    env = cli.cli_env(pg15.url("postgres"), tmp_path / "backups", PGPASSFILE=str(pg15.passfile), BACKUP_JOBS="1")
    source = {"env": env, "root": tmp_path}
    base = cli.create(env, "base")
    target = tmp_path / "restored"

    refused = run_module(source, "pg_backup_restore", {"pgdata": str(target), "recovery_target_name": "nope"}, "r1")
    assert refused.get("failed") and "cannot restore to restore point 'nope'" in refused["msg"], refused
    assert refused["step"] == "restore" and not target.exists()
    both = run_module(source, "pg_backup_restore", {"pgdata": str(target), "recovery_target": "latest",
                                                    "recovery_target_lsn": "0/1"}, "r2")
    assert both.get("failed") and "mutually exclusive" in both["msg"] and not target.exists()
    alone = run_module(source, "pg_backup_restore", {"recovery_target": "latest"}, "r3")
    assert alone.get("failed") and "pgdata" in alone["msg"]

    done = run_module(source, "pg_backup_restore", {"pgdata": str(target), "recovery_target": "immediate"}, "r4")
    assert done["changed"] is True and not done.get("failed"), (done.get("msg"), done.get("module_stderr"))
    restore = done["restore"]
    assert restore["backup_id"] == base["id"] and restore["recovery_target"] == "immediate"
    assert restore["chain"] == [base["id"]]
    assert "wal-fetch --spool pg_wal/seawall-prefetch %f %p" in restore["restore_command"]
    auto = (target / "postgresql.auto.conf").read_text()
    assert "recovery_target = 'immediate'" in auto and (target / "recovery.signal").is_file()
    again = run_module(source, "pg_backup_restore", {"pgdata": str(target), "recovery_target": "immediate"}, "r5")
    assert again["changed"] is False and "already holds %s" % base["id"] in again["skipped_reason"], again


def test_an_incremental_chain_on_18_starts_recovery_to_a_time_after_it():
    with archiving(18) as arch:
        pg = arch.cluster
        pg.create_db("pitr")
        pg.psql("CREATE TABLE pitr_rows (batch int, n int, note text)", db="pitr")
        env = {"DATABASE_URL": pg.url("pitr")}
        base = json.loads(arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True).stdout)
        _batch(pg, 1)
        time.sleep(1.1)
        before_link = pg.scalar(SERVER_TIME) or ""
        time.sleep(1.1)
        _batch(pg, 2)
        link = json.loads(arch.cli_as_server("create", "--type", "incremental", "--json", env=env, check=True).stdout)
        assert link["parent"] == base["id"]
        _batch(pg, 3)
        time.sleep(1.1)
        after_link = pg.scalar(SERVER_TIME) or ""
        time.sleep(1.1)
        _batch(pg, 4)
        arch.wait_archived(arch.switch_wal())

        later = _recovered(arch, env, "after", "--target-time", after_link)
        assert later["chain"] == [base["id"], link["id"]] and later["batches"] == [1, 2, 3], later
        earlier = _recovered(arch, env, "before", "--target-time", before_link)
        assert earlier["chain"] == [base["id"]] and earlier["batches"] == [1], earlier


def test_an_encrypted_archive_at_a_destination_restores_to_a_time():
    with archiving(15, encryption="aes") as arch:
        disk = arch.owned_dir("second-disk")
        arch.write_config(dict(arch.config, destinations={"disk": {"type": "local", "path": str(disk)}}))
        pg = arch.cluster
        pg.create_db("pitr")
        pg.psql("CREATE TABLE pitr_rows (batch int, n int, note text)", db="pitr")
        env = {"DATABASE_URL": pg.url("pitr")}
        arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True)
        _batch(pg, 1)
        arch.switch_wal()
        time.sleep(1.1)
        between = pg.scalar(SERVER_TIME) or ""
        time.sleep(1.1)
        _batch(pg, 2)
        arch.wait_archived(arch.switch_wal())
        assert any(name.endswith(".enc") for name in os.listdir(disk / "wal"))
        for name in os.listdir(arch.wal_folder()):  # the local archive lost: only the destination has the WAL
            os.unlink(arch.wal_folder() / name)
        done = _recovered(arch, env, "from-disk", "--destination", "disk", "--target-time", between)
        assert done["batches"] == [1], done


def test_pg_waldump_on_a_real_servers_wal(pg15, tmp_path):
    """pg/waldump and the scanner against segments from a running server's pg_wal (no archive involved)."""
    # pylint: disable=import-outside-toplevel
    import shutil
    from datetime import datetime, timezone

    from seawall_pgbackup.ops import pitr
    from seawall_pgbackup.pg.binaries import select_tools
    from seawall_pgbackup.repo.walarchive import Segment, segno_of

    pg15.psql("CREATE TABLE IF NOT EXISTS waldump_rows (x int)")
    first = pg15.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())") or ""
    xid = pg15.scalar("BEGIN; INSERT INTO waldump_rows VALUES (1); SELECT txid_current(); COMMIT") or ""
    pg15.psql("SELECT pg_create_restore_point('waldump point')")
    switched = pg15.scalar("SELECT pg_switch_wal()") or ""
    pg15.psql("INSERT INTO waldump_rows VALUES (2)")
    pg15.psql("SELECT pg_switch_wal()")
    wal = pg15.data_dir / "pg_wal"
    names = sorted(n for n in os.listdir(wal) if len(n) == 24 and n[:8] == first[:8] and n >= first)[:2]
    now = datetime.now(timezone.utc)
    segments = [Segment(n, 1, segno_of(n), "", 16 << 20, "", "", now, now, "segment") for n in names]

    class Copies:  # the archive's fetch, from pg_wal
        @staticmethod
        def fetch(name, dest):
            shutil.copy(wal / name, dest)
            return True

    tools = select_tools(15, None, tools=("pg_waldump",))
    scanner = pitr._Scanner(Copies(), segments, tools, str(tmp_path))  # pylint: disable=protected-access
    commit = scanner.first(segments, lambda r: r.kind == "commit" and str(r.xid) == xid)
    assert commit is not None and commit.moment is not None and abs((now - commit.moment).total_seconds()) < 60
    point = scanner.first(segments, lambda r: r.kind == "restore_point")
    assert point is not None and point.name == "waldump point" and point.lsn > commit.lsn
    end = pitr.parse_lsn(switched)
    last = scanner.last_before(segments, end)  # the switch record itself: recovery to it needs no later segment
    assert last is not None and point.lsn < last.lsn < end
    after = scanner.record_from(segments, end)  # the first record of the next segment
    assert after is not None and after.lsn >= end and after.lsn // (16 << 20) == end // (16 << 20) + 1
    assert scanner.record_from(segments[:1], end) is None  # that segment not there: no record at or after it
