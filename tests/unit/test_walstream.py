"""wal-receive's stream directory without a server (repo/walstream.py, ops/walreceive.Pusher, ops/wal.wal_fetch):
which files count, what is served and how, what the push pass keeps and removes, and that the archive's listings,
orphan removal and the catalog never see the stream."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest

from seawall_pgbackup.cli.main import main
from seawall_pgbackup.config.connection import DbTarget
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.ops.wal import wal_fetch
from seawall_pgbackup.ops.walreceive import Pusher, create_slot_command, receivewal_command, wal_receive
from seawall_pgbackup.pg.binaries import ClientTools
from seawall_pgbackup.repo.catalog import open_repository
from seawall_pgbackup.repo.walarchive import WalArchive, continuity, wal_name
from seawall_pgbackup.repo.walstream import (completed, copy_from_stream, ensure_stream_dir, source_of,
                                             stream_segments, with_stream)

SEG = 1 << 20


def _cfg(tmp_path, **env):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700, exist_ok=True)
    return load_config(env=dict({"BACKUP_DIR": str(backup_dir)}, **env))


def _put(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _bytes(seed: int, size: int = SEG) -> bytes:
    block = ("wal %d " % seed).encode() * 64
    return (block * (size // len(block) + 1))[:size]


def test_the_slot_name_is_checked(tmp_path, capsys):
    assert load_config(env={}).wal_slot == "seawall_pgbackup"
    assert load_config(env={"BACKUP_WAL_SLOT": "eu_1"}).wal_slot == "eu_1"
    for bad in ("Upper", "with-dash", "x" * 64, "sp ace"):
        with pytest.raises(ConfigError, match="BACKUP_WAL_SLOT"):
            load_config(env={"BACKUP_WAL_SLOT": bad})
    cfg = _cfg(tmp_path, DATABASE_URL="postgresql://u@127.0.0.1:1/x")
    with pytest.raises(ConfigError, match="--slot='no/slot' is not valid"):
        wal_receive(cfg, "no/slot")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["--backup-dir", cfg.backup_dir, "wal-receive", "--slot", "Bad"])
    finally:
        signal.signal(signal.SIGTERM, previous)  # the CLI turns SIGTERM into KeyboardInterrupt
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 4 and len(err) == 1 and "--slot='Bad' is not valid" in err[0], err


def test_commands_carry_no_password():
    tools = ClientTools("/opt/pg/bin", 15, "15.18")
    target = DbTarget("postgresql://backup:s3cret@db:5432/app")
    for cmd in (receivewal_command(tools, target, "/r/wal/stream", "s"), create_slot_command(tools, target, "s")):
        assert not any("s3cret" in arg for arg in cmd) and "--no-password" in cmd and "--slot=s" in cmd
    assert "--no-loop" in receivewal_command(tools, target, "/r/wal/stream", "s")
    assert {"--create-slot", "--if-not-exists"} <= set(create_slot_command(tools, target, "s"))


def test_completed_files_and_what_is_served(tmp_path):
    cfg = _cfg(tmp_path)
    folder = ensure_stream_dir(cfg.backup_dir)
    assert os.stat(folder).st_mode & 0o777 == 0o700
    one, two, three = (wal_name(1, n, SEG) for n in (1, 2, 3))
    _put(folder, one, _bytes(1))
    _put(folder, two + ".partial", _bytes(2))
    _put(folder, "00000002.history", b"1\t0/3000000\tno recovery target specified\n")
    _put(folder, "00000002.history.tmp", b"half")
    _put(folder, "notes.txt", b"x")
    os.symlink(os.path.join(folder, one), os.path.join(folder, three))
    assert completed(folder) == ["00000002.history", one]
    assert source_of(cfg.backup_dir, two) == os.path.join(folder, two + ".partial")
    assert source_of(cfg.backup_dir, three) is None  # a symlink
    assert source_of(cfg.backup_dir, "notes.txt") is None and source_of(cfg.backup_dir, two + ".partial") is None
    dest = str(tmp_path / "pg_wal_file")
    assert copy_from_stream(cfg.backup_dir, two, dest) and open(dest, "rb").read() == _bytes(2)
    assert not copy_from_stream(cfg.backup_dir, three, dest + "x") and not os.path.exists(dest + "x")
    # a .partial (pg_receivewal's in-progress file) is served before the completed name: it is renamed to it
    _put(folder, one + ".partial", _bytes(9))
    assert source_of(cfg.backup_dir, one).endswith(".partial")


def test_wal_fetch_serves_the_stream_only_when_the_archive_has_nothing(tmp_path):
    cfg = _cfg(tmp_path)
    name = wal_name(1, 5, SEG)
    dest = str(tmp_path / "out")
    assert not wal_fetch(cfg, name, dest)  # no stream directory at all
    folder = ensure_stream_dir(cfg.backup_dir)
    _put(folder, name + ".partial", _bytes(5))
    assert wal_fetch(cfg, name, dest) and open(dest, "rb").read() == _bytes(5)
    pushed = _put(str(tmp_path), name, _bytes(6))
    WalArchive(cfg).push(pushed)
    assert wal_fetch(cfg, name, dest) and open(dest, "rb").read() == _bytes(6)  # the archive's first
    assert not wal_fetch(cfg, wal_name(1, 6, SEG), dest + "2") and not os.path.exists(dest + "2")


def test_the_push_pass_removes_only_what_was_archived(tmp_path):
    cfg = _cfg(tmp_path)
    folder = ensure_stream_dir(cfg.backup_dir)
    lines = []
    pusher = Pusher(cfg, folder, lines.append)
    one, two, three = (wal_name(1, n, SEG) for n in (1, 2, 3))
    # an archived file under the name of the second, with other bytes: its push is refused, the file kept
    WalArchive(cfg).push(_put(str(tmp_path), two, _bytes(99)))
    _put(folder, one, _bytes(1))
    _put(folder, two, _bytes(2))
    _put(folder, three + ".partial", _bytes(3))
    assert pusher.run() == 1 and pusher.pushed == [one]
    assert sorted(os.listdir(folder)) == [two, three + ".partial"]
    assert len(lines) == 1 and two in lines[0] and "kept" in lines[0]
    assert pusher.run() == 0 and len(lines) == 1  # not due again yet: no second line
    archived = {s.wal for s in WalArchive(cfg).segments()}
    assert archived == {one, two}
    # a completed file the archive already holds (archive_command pushed it): a no-op push, then removed
    _put(folder, one, _bytes(1))
    assert Pusher(cfg, folder, lines.append).run() == 1 and one not in os.listdir(folder)


def test_the_archive_and_the_catalog_never_list_the_stream(tmp_path):
    cfg = _cfg(tmp_path)
    folder = ensure_stream_dir(cfg.backup_dir)
    name = wal_name(1, 1, SEG)
    WalArchive(cfg).push(_put(str(tmp_path), name, _bytes(1)))
    for junk in (wal_name(1, 2, SEG) + ".partial", wal_name(1, 3, SEG), ".x.tmp", "notes.txt"):
        _put(folder, junk, b"j")
        os.utime(os.path.join(folder, junk), (0, 0))
    archive = WalArchive(cfg)
    assert [s.wal for s in archive.segments()] == [name]
    assert archive.orphans(timedelta(0)) == [] and archive.remove_orphans(timedelta(0)) == []
    repo = open_repository(cfg)
    try:
        assert repo.leftovers() == [] and repo.remove_leftovers(timedelta(0)) == []
    finally:
        repo.close()
    assert len(os.listdir(folder)) == 4


def test_reachability_sees_the_stream_after_the_archive(tmp_path):
    cfg = _cfg(tmp_path)
    folder = ensure_stream_dir(cfg.backup_dir)
    one, two, three = (wal_name(1, n, SEG) for n in (1, 2, 3))
    WalArchive(cfg).push(_put(str(tmp_path), one, _bytes(1)))
    _put(folder, one, _bytes(1))  # completed, not yet removed: the archive's copy counts
    _put(folder, two, _bytes(2))
    _put(folder, three + ".partial", _bytes(3))
    _put(folder, wal_name(1, 4, SEG) + ".partial", b"short")  # not a full segment: nothing to read
    archived = WalArchive(cfg).segments()
    extra = stream_segments(cfg.backup_dir, archived)
    assert [(s.wal, s.stored) for s in extra] == [(two, "stream/" + two), (three, "stream/%s.partial" % three)]
    merged = with_stream(cfg.backup_dir, archived)
    walk = continuity(merged, "0/100000", 1, seg_size=SEG)
    assert walk.gaps == [] and walk.last is not None and walk.last.wal == three
