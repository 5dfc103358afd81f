"""``wal-receive`` (docs/wal.md, "Near-zero RPO"): pg_receivewal through a replication slot into ``wal/stream``,
completed files pushed into the archive, the in-progress ``.partial`` served by wal-fetch when the archive has
nothing newer. Against a real PostgreSQL 15 archiving through our wal-push (tests/support/archiving.py); the
receiver runs as the server's OS user, who owns the repository, as on a host (roles/wal_archive).

One cluster, one base backup: a wrong --slot is one line; the slot is created once and reused; a completed
segment is pushed (the same bytes archive_command pushes: one record) and removed from the stream; SIGTERM stops
the receiver with exit 0 and no half file; a symlink planted in the stream is not served; cleanup and verify
leave the stream alone; then rows committed every 50 ms for ~8 s, kill -9 of the whole server, its data
directory moved away: restore --target-latest from the base and the archive + stream brings every row back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.support.archiving import Archiving, archiving
from tests.support.pgcluster import PgBinariesNotFound, PgCluster

pytestmark = pytest.mark.postgres

SLOT = "seawall_pgbackup"
TEMP = re.compile(r"\.tmp$|\.partial$")


def _arch(**kw):
    try:
        return archiving(15, **kw)
    except PgBinariesNotFound as exc:  # pragma: no cover - depends on the host
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15 binaries missing in CI: %s" % exc, pytrace=False)
        pytest.skip("PostgreSQL 15 binaries not installed: %s" % exc)


def _one_line(proc_or_text) -> str:
    text = proc_or_text if isinstance(proc_or_text, str) else proc_or_text.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s" % what)


def _slots(pg: PgCluster) -> List[str]:
    return [r[0] or "" for r in pg.psql("SELECT slot_name FROM pg_replication_slots ORDER BY 1")]


def _stream(arch: Archiving) -> Path:
    return arch.wal_folder() / "stream"


def _listing(folder: Path) -> List[str]:
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _partial(arch: Archiving) -> List[str]:
    return [n for n in _listing(_stream(arch)) if n.endswith(".partial")]


def _receiver(arch: Archiving, env: Dict[str, str], *args: str) -> subprocess.Popen:
    proc = arch.popen_as_server("wal-receive", *args, env=env)
    _wait(lambda: _partial(arch) or proc.poll() is not None, "pg_receivewal's .partial")
    assert proc.poll() is None, proc.communicate()
    return proc


def _crash(pg: PgCluster) -> None:
    """kill -9 of the postmaster and every child: the server dies as in a power cut of its process tree."""
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path("/proc/%s/stat" % entry).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(entry))
    for pid in [postmaster] + children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_wal_receive_recovers_every_row_committed_before_a_crash():
    # archive_timeout 60 s: within this test nothing but explicit switches reaches the archive through the server
    with _arch(archive_timeout=60, settings={"synchronous_commit": "on", "checkpoint_timeout": "1h"}) as arch:
        pg = arch.cluster
        pg.create_db("rpo")
        pg.psql("CREATE TABLE rows (n int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())", db="rpo")
        env = {"DATABASE_URL": pg.url("rpo")}
        arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True)

        # a wrong slot name: one line, nothing started
        bad = arch.cli_as_server("wal-receive", "--slot", "Bad-Slot", env=env)
        assert bad.returncode == 4 and "--slot='Bad-Slot' is not valid" in _one_line(bad), bad.stderr
        bad = arch.cli_as_server("wal-receive", env=dict(env, BACKUP_WAL_SLOT="x" * 64))
        assert bad.returncode == 4 and "BACKUP_WAL_SLOT" in _one_line(bad), bad.stderr
        assert _slots(pg) == []

        receiver = _receiver(arch, env)
        assert _slots(pg) == [SLOT]
        stream = _stream(arch)
        assert stream.stat().st_mode & 0o777 == 0o700 and stream.stat().st_uid == arch.user.pw_uid

        # a completed segment: pushed by the receiver and by archive_command, the same bytes (one record), and
        # gone from the stream
        pg.psql("INSERT INTO rows (n) SELECT -g FROM generate_series(1, 1000) g", db="rpo")
        closed = arch.switch_wal()
        arch.wait_archived(closed)
        _wait(lambda: closed not in _listing(stream), "the receiver to push and remove %s" % closed)
        assert [r for r in arch.records() if r.startswith(closed + "-")] != []
        assert len([r for r in arch.records() if r.startswith(closed + "-")]) == 1

        # SIGTERM: exit 0, the .partial kept, no temp file in the archive or the stream
        receiver.send_signal(signal.SIGTERM)
        out, err = receiver.communicate(timeout=30)
        assert receiver.returncode == 0, err
        assert not [n for n in _listing(arch.wal_folder()) if TEMP.search(n)]
        assert [n for n in _listing(stream) if not n.endswith(".partial")] == []

        # a second start reuses the slot
        receiver = _receiver(arch, env, "--slot", SLOT)
        assert _slots(pg) == [SLOT]

        # a symlink planted in the stream is never served, a stray file never removed by cleanup or verify
        planted = "000000010000000000000099"
        decoy = arch.base / "decoy"
        decoy.write_bytes(b"\0" * (16 << 20))
        os.symlink(decoy, stream / (planted + ".partial"))
        os.symlink(decoy, stream / planted.replace("99", "98"))
        stray = stream / "notes.txt"
        stray.write_text("not WAL")
        fetched = arch.base / "fetched"
        for name in (planted, planted.replace("99", "98")):
            done = arch.cli_as_server("wal-fetch", name, str(fetched))
            assert done.returncode == 1 and not fetched.exists(), done.stderr
        os.unlink(stream / planted.replace("99", "98"))
        arch.cli_as_server("cleanup", "--leftover-grace", "0s", env=env, check=True)
        verify = json.loads(arch.cli_as_server("verify", "--wal", "--json", env=env, check=True).stdout)
        assert [r["id"] for r in verify] == ["wal"] and verify[0]["ok"] and not verify[0]["gaps"], verify
        health = json.loads(arch.cli_as_server("health", "--json", env=env).stdout)
        wal = [c for c in health["checks"] if c["check"] == "wal"]
        assert wal and wal[0]["status"] == "ok", wal
        assert stray.is_file() and _partial(arch)
        os.unlink(stream / (planted + ".partial"))

        # rows committed one by one; the last one a second before the crash
        committed = 0
        until = time.monotonic() + 8
        while time.monotonic() < until:
            committed += 1
            pg.psql("INSERT INTO rows (n) VALUES (%d)" % committed, db="rpo")
            time.sleep(0.05)
        time.sleep(1.0)
        _crash(pg)
        os.rename(pg.data_dir, arch.base / "lost-data")

        # pg_receivewal ends with the server: wal-receive exits non-zero with one line (systemd restarts it)
        out, err = receiver.communicate(timeout=60)
        assert receiver.returncode == 5, err
        assert "pg_receivewal" in _one_line(err)

        where = arch.base / "restored"
        where.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(where, arch.user.pw_uid, arch.user.pw_gid)
        done = arch.cli_as_server("restore", "latest", "--pgdata", str(where / "data"), "--target-latest", "--json",
                                  env=env, check=True)
        result = json.loads(done.stdout)
        assert result["recovery_target"] == "latest"
        # the stream's .partial reaches where its valid records end (pg_waldump), not its segment's end
        high, low = (int(part, 16) for part in result["archive_reaches_lsn"].split("/"))
        assert low % (16 << 20) != 0, result
        beyond = "%X/%X" % (high, low + 0x1000)
        refused = arch.cli_as_server("restore", "latest", "--pgdata", str(arch.base / "never"), "--target-lsn",
                                     beyond, env=env)
        assert refused.returncode != 0 and "the archive reaches %s" % result["archive_reaches_lsn"] in \
            _one_line(refused), refused.stderr
        assert not (arch.base / "never").exists()
        restored = arch.start_restored(where, "received")
        try:
            _wait(lambda: restored.scalar("SELECT pg_is_in_recovery()") == "f", "the end of recovery", 90)
            rows = restored.psql("SELECT count(*), max(n) FROM rows WHERE n > 0", db="rpo")[0]
            assert (int(rows[0] or 0), int(rows[1] or 0)) == (committed, committed), (rows, committed)
        finally:
            restored.destroy(mode="immediate")


def test_wal_receive_alone_without_archive_command():
    """archive_mode off: the receiver is the only way WAL reaches the repository (started before the base
    backup, as roles/wal_archive does); a crash loses nothing committed a second before it."""
    with _arch(settings={"archive_mode": "off", "synchronous_commit": "on", "checkpoint_timeout": "1h"}) as arch:
        pg = arch.cluster
        pg.create_db("rpo")
        pg.psql("CREATE TABLE rows (n int PRIMARY KEY)", db="rpo")
        env = {"DATABASE_URL": pg.url("rpo")}
        receiver = _receiver(arch, env, "--slot", "rpo_only")
        assert _slots(pg) == ["rpo_only"]
        arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True)
        committed = 0
        until = time.monotonic() + 3
        while time.monotonic() < until:
            committed += 1
            pg.psql("INSERT INTO rows (n) VALUES (%d)" % committed, db="rpo")
        time.sleep(1.0)
        _crash(pg)
        os.rename(pg.data_dir, arch.base / "lost-data")
        _out, err = receiver.communicate(timeout=60)
        assert receiver.returncode == 5 and "pg_receivewal" in _one_line(err), err
        assert arch.records(), "the receiver pushed the segments it completed (the base backup's switch)"

        where = arch.base / "restored"
        where.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(where, arch.user.pw_uid, arch.user.pw_gid)
        arch.cli_as_server("restore", "latest", "--pgdata", str(where / "data"), "--target-latest", env=env,
                           check=True)
        restored = arch.start_restored(where, "received")
        try:
            _wait(lambda: restored.scalar("SELECT pg_is_in_recovery()") == "f", "the end of recovery", 90)
            assert restored.scalar("SELECT count(*) FROM rows", db="rpo") == str(committed)
        finally:
            restored.destroy(mode="immediate")
