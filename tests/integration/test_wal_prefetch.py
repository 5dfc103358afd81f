"""WAL prefetch during point-in-time recovery (``wal-fetch --spool``) on a real PostgreSQL 15 archiving through
our wal-push.

Recovery over a dozen archived segments with prefetch on ends exactly where it ends without it (the same rows),
with few full fetches (the rest served from the spool), the spool removed and the prefetcher gone afterwards;
a prefetcher killed with SIGKILL in the middle is replaced and recovery is still exact; a damaged archived
segment is never spooled and still stops recovery with the 200+code refusal (never "absent", which would
promote early).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.integration.test_pitr import _batch, _batches, _chown, _restore
from tests.support.archiving import Archiving, archiving
from tests.support.pgcluster import PgClusterError

SPOOL = Path("pg_wal") / "seawall-prefetch"
TRACE = "SEAWALL_TEST_WAL_FETCH_TRACE"
ROWS = "SELECT md5(string_agg(batch || ':' || n || ':' || note, ',' ORDER BY batch, n)) FROM pitr_rows"


def _events(trace: Path) -> List[List[str]]:
    return [line.split()[:2] for line in trace.read_text().splitlines()] if trace.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (reparented to a test process that does not reap it)
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _until(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def _history(arch: Archiving, env: Dict[str, str]) -> str:
    """Twelve segments of batches after a base backup; a restore point after batch 8. Returns the segment that
    holds batch 5."""
    pg = arch.cluster
    pg.create_db("pitr")
    pg.psql("CREATE TABLE pitr_rows (batch int, n int, note text)", db="pitr")
    arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True)
    fifth = ""
    for number in range(1, 9):
        _batch(pg, number)
        if number == 5:
            fifth = pg.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())") or ""
        arch.switch_wal()
    pg.psql("SELECT pg_create_restore_point('after eight')")
    for number in (9, 10):
        _batch(pg, number)
        arch.switch_wal()
    arch.wait_archived(arch.switch_wal())
    return fifth


def _recover(arch: Archiving, env: Dict[str, str], name: str, extra: Optional[Dict[str, str]] = None,
             kill_first: bool = False, server: Optional[Dict[str, str]] = None) -> Dict:
    """Restore to 'after eight' with ``extra`` environment, start with ``server`` environment, wait for the
    promotion; the data, what wal-fetch did (the trace) and how long it took."""
    where = arch.base / name
    where.mkdir(mode=0o700)
    _chown(arch, where)
    trace = arch.owned_dir(name + "-trace") / "trace"
    done = _restore(arch, dict(env, **(extra or {})), where, "--target-name", "after eight")
    data = where / "data"
    auto = (data / "postgresql.auto.conf").read_text()
    prefetch = (extra or {}).get("BACKUP_WAL_PREFETCH") != "0"
    assert ("--spool pg_wal/seawall-prefetch %f %p'" in auto) is prefetch, auto
    assert ("recovery_end_command = '" in auto and "wal-prefetch-stop pg_wal/seawall-prefetch'" in auto) is prefetch
    restored = arch.start_restored(where, "prefetch%d" % arch.cluster.major, dict(server or {}, **{TRACE: str(trace)}))
    started = time.monotonic()
    try:
        restored.start()
        if kill_first:
            assert _until(lambda: any(e[0] == "prefetcher" for e in _events(trace))), _events(trace)
            first = next(int(e[1]) for e in _events(trace) if e[0] == "prefetcher")
            os.kill(first, signal.SIGKILL)
        assert _until(lambda: restored.scalar("SELECT pg_is_in_recovery()") == "f", 120), \
            restored.log_file.read_text()[-3000:]
        done["seconds_to_promote"] = round(time.monotonic() - started, 2)
        done["batches"] = _batches(restored)
        done["rows"] = restored.scalar(ROWS, db="pitr")
        # recovery_end_command removed the spool; nothing of ours is left running
        assert _until(lambda: not (data / SPOOL).exists(), 10), os.listdir(data / SPOOL)
    finally:
        restored.destroy()
    events = _events(trace)
    done["events"] = events
    done["full"] = [e[1] for e in events if e[0] == "full"]
    done["spooled"] = [e[1] for e in events if e[0] == "spool"]
    done["prefetchers"] = [int(e[1]) for e in events if e[0] == "prefetcher"]
    assert _until(lambda: not any(_alive(pid) for pid in done["prefetchers"]), 10), done["prefetchers"]
    return done


def test_prefetched_recovery_ends_where_recovery_without_it_does():
    with archiving(15) as arch:
        env = {"DATABASE_URL": arch.cluster.url("pitr")}
        _history(arch, env)
        source = arch.cluster.scalar(ROWS.replace("FROM pitr_rows", "FROM pitr_rows WHERE batch <= 8"), db="pitr")

        plain = _recover(arch, env, "plain", {"BACKUP_WAL_PREFETCH": "0"})
        assert plain["batches"] == list(range(1, 9)) and plain["rows"] == source
        assert not plain["spooled"] and not plain["prefetchers"] and len(plain["full"]) >= 10, plain["events"]

        fast = _recover(arch, env, "prefetch")
        assert fast["batches"] == plain["batches"] and fast["rows"] == source
        segments = [n for n in plain["full"] if len(n) == 24]
        assert len(segments) >= 10
        # the same segments as without prefetch, all but the first one or two from the spool
        assert sorted(set(n for n in fast["full"] + fast["spooled"] if len(n) == 24)) == sorted(set(segments))
        assert len(fast["spooled"]) >= len(segments) - 3, fast["events"]
        assert len(fast["full"]) <= len(plain["full"]) - len(segments) + 3, fast["events"]
        assert len(fast["prefetchers"]) == 1, fast["events"]


def test_a_prefetcher_killed_in_the_middle_is_replaced_and_recovery_is_exact():
    with archiving(15) as arch:
        env = {"DATABASE_URL": arch.cluster.url("pitr")}
        _history(arch, env)
        source = arch.cluster.scalar(ROWS.replace("FROM pitr_rows", "FROM pitr_rows WHERE batch <= 8"), db="pitr")
        # each prefetched file takes 0.3 s more: recovery waits for the spool, and the kill lands in the middle
        slow = {"SEAWALL_TEST_PAUSE": "wal-prefetch", "SEAWALL_TEST_PAUSE_SECONDS": "0.3"}
        done = _recover(arch, env, "killed", server=slow, kill_first=True)
        assert done["batches"] == list(range(1, 9)) and done["rows"] == source
        assert len(done["prefetchers"]) >= 2, done["events"]  # the next full fetch started another one
        assert done["spooled"], done["events"]


def test_a_damaged_segment_is_never_spooled_and_still_stops_recovery():
    with archiving(15) as arch:
        env = {"DATABASE_URL": arch.cluster.url("pitr")}
        fifth = _history(arch, env)
        where = arch.base / "damaged"
        where.mkdir(mode=0o700)
        _chown(arch, where)
        _restore(arch, env, where, "--target-name", "after eight")
        stored = [n for n in os.listdir(arch.wal_folder()) if n.startswith(fifth + "-") and not n.endswith(".json")]
        assert len(stored) == 1, stored
        path = arch.wal_folder() / stored[0]
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))  # after the restore's checks: recovery meets it
        trace = arch.owned_dir("damaged-trace") / "trace"
        restored = arch.start_restored(where, "prefetch%d" % arch.cluster.major, {TRACE: str(trace)})
        try:
            try:
                restored.start(attempts=1)
            except PgClusterError:
                pass  # the startup process may fail before the server accepts connections
            data = where / "data"
            assert _until(lambda: not (data / "postmaster.pid").exists(), 120), restored.log_file.read_text()[-3000:]
            log = restored.log_file.read_text(errors="replace")
        finally:
            restored.destroy(mode="immediate")
        assert 'could not restore file "%s" from archive: child process exited with exit code 208' % fifth in log, \
            log[-3000:]
        assert "selected new timeline ID" not in log and "archive recovery complete" not in log
        events = _events(trace)
        assert ["full", fifth] in events and ["spool", fifth] not in events and ["prefetched", fifth] not in events
        assert any(e[0] == "spool" for e in events), events  # the segments before it came from the spool
        # the server is gone: the prefetcher removed the spool and ended
        assert _until(lambda: not (data / SPOOL).exists(), 15)
        pids = [int(e[1]) for e in events if e[0] == "prefetcher"]
        assert pids and _until(lambda: not any(_alive(pid) for pid in pids), 10), pids
