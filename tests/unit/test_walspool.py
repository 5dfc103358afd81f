"""The WAL prefetch spool (core/walspool.py) and its prefetcher (ops/walprefetch.py), without a server.

What wal-fetch serves from the spool must be exactly what the checked fetch path wrote there: only a regular
file under a segment's own name, never a temp file, a link, a marker or a history file; and a file the
prefetcher could not fetch (absent, refused) is never spooled, so PostgreSQL's request for it takes the full path.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core import walspool
from seawall_pgbackup.core.errors import VerifyError
from seawall_pgbackup.ops import walprefetch
from seawall_pgbackup.ops.wal import wal_fetch, wal_push

SEG = "000000010000000000000003"
MiB = 1 << 20


@pytest.fixture
def spool(tmp_path):
    folder = tmp_path / "pg_wal" / "seawall-prefetch"
    folder.parent.mkdir(mode=0o700)
    assert walspool.ensure_spool(str(folder))
    return folder


def _file(path, data=b"x" * 100):
    path.write_bytes(data)
    return path


def test_segment_names_only():
    assert walspool.is_segment(SEG)
    for name in ("00000002.history", "0000000100000000000000ab", SEG + ".partial", SEG + ".pending", "." + SEG,
                 SEG[:-1], "", "000000010000000000000003.00000028.backup", "0000000100000000000000G3"):
        assert not walspool.is_segment(name), name


def test_the_fast_path_parses_only_a_plain_wal_fetch_with_a_spool():
    parse = walspool.parse_fetch
    assert parse(["wal-fetch", "--spool", "S", SEG, "pg_wal/RECOVERYXLOG"]) == ("S", SEG, "pg_wal/RECOVERYXLOG")
    assert parse(["--config", "/c.json", "--backup-dir=/b", "--accept-unsigned", "wal-fetch", SEG, "D",
                  "--spool=S", "--destination", "disk"]) == ("S", SEG, "D")
    for argv in (["wal-fetch", SEG, "D"],                           # no spool: the full command, always
                 ["wal-push", "--spool", "S", SEG],
                 ["wal-fetch", "--spool", "S", SEG, "D", "extra"],
                 ["wal-fetch", "--spool", "S", "--help", SEG, "D"],
                 ["wal-fetch", "--spool", "S", "--newer-option", SEG, "D"],
                 ["wal-fetch", "-h", "--spool", "S", SEG, "D"],
                 ["wal-fetch", SEG, "D", "--spool"]):
        assert parse(argv) is None, argv
    assert walspool.parse_stop(["wal-prefetch-stop", "S"]) == "S"
    assert walspool.parse_stop(["--config", "c", "wal-prefetch-stop", "S"]) is None
    assert walspool.parse_stop(["wal-prefetch-stop"]) is None


def test_a_spooled_segment_is_moved_to_dest(spool, tmp_path):
    _file(spool / SEG, b"segment bytes")
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    assert walspool.fast(["wal-fetch", "--spool", str(spool), SEG, str(dest)]) == 0
    assert dest.read_bytes() == b"segment bytes" and not (spool / SEG).exists()
    # claimed once: the second ask is not served here (the full path answers it)
    assert walspool.fast(["wal-fetch", "--spool", str(spool), SEG, str(dest)]) is None


def test_nothing_but_a_regular_file_under_the_exact_name_is_served(spool, tmp_path):
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    outside = _file(tmp_path / "outside")
    other = "000000010000000000000004"
    os.symlink(outside, spool / SEG)                                         # a link: O_NOFOLLOW refuses it
    _file(spool / (".%s.123-abcd.tmp" % other))                             # a temp file under its final name?
    _file(spool / "00000002.history")                                        # never spooled, never served
    os.link(_file(spool / "000000010000000000000005"), tmp_path / "hard")   # a second link to it
    _file(spool / "000000010000000000000006", b"")                           # empty
    for name in (SEG, other, "00000002.history", "000000010000000000000005", "000000010000000000000006",
                 "000000010000000000000007"):
        assert not walspool.claim(str(spool), name, str(dest)), name
    assert not dest.exists() and outside.read_bytes() == b"x" * 100


def test_a_spool_that_is_not_ours_alone_is_not_used(spool, tmp_path):
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    _file(spool / SEG)
    os.chmod(spool, 0o750)
    assert not walspool.claim(str(spool), SEG, str(dest)) and not walspool.ensure_spool(str(spool))
    os.chmod(spool, 0o700)
    link = tmp_path / "link-spool"
    os.symlink(spool, link)
    assert not walspool.claim(str(link), SEG, str(dest))
    assert walspool.claim(str(spool), SEG, str(dest))


def test_a_pending_segment_is_waited_for_while_its_prefetcher_lives(spool, tmp_path):
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    marker = spool / (SEG + walspool.PENDING)
    marker.write_text("%d\n" % os.getpid())

    def finish():
        time.sleep(0.2)
        _file(spool / ".tmp-first", b"done")
        os.replace(spool / ".tmp-first", spool / SEG)
        marker.unlink()

    worker = threading.Thread(target=finish)
    started = time.monotonic()
    worker.start()
    assert walspool.claim_waiting(str(spool), SEG, str(dest))
    worker.join()
    assert dest.read_bytes() == b"done" and time.monotonic() - started >= 0.2
    # the prefetcher failed (absent, refused): the marker goes without a file, and wal-fetch takes the full path
    marker.write_text("%d\n" % os.getpid())
    threading.Timer(0.1, marker.unlink).start()
    assert not walspool.claim_waiting(str(spool), SEG, str(dest))
    # a killed prefetcher's marker: not waited for
    marker.write_text("999999999\n")
    started = time.monotonic()
    assert not walspool.claim_waiting(str(spool), SEG, str(dest)) and time.monotonic() - started < 1


def test_requests_and_windows():
    assert walprefetch.parse_request(walprefetch.request_text(SEG, 16 * MiB)) == (SEG, 16 * MiB)
    for text in ("", SEG, "00000002.history 16777216", SEG + " 1000", SEG + " 16777216 x", SEG + " -1"):
        assert walprefetch.parse_request(text) is None, text
    assert walprefetch.window("0000000200000001000000FE", 16 * MiB, 3) == [
        "0000000200000001000000FF", "000000020000000200000000", "000000020000000200000001"]
    assert walprefetch.window("00000001000000000000003F", 64 * MiB, 2) == [
        "000000010000000100000000", "000000010000000100000001"]  # 64 segments of 64 MiB per "log id"


def _archive(tmp_path, count):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path / "backups")})
    source = tmp_path / "source"
    source.mkdir()
    names = []
    for number in range(1, count + 1):
        name = "0000000100000000000000%02X" % number
        _file(source / name, os.urandom(4096) + bytes(MiB - 4096))
        wal_push(cfg, str(source / name))
        names.append(name)
    return cfg, source, names


def _run(prefetcher):
    thread = threading.Thread(target=prefetcher.run, daemon=True)
    thread.start()
    return thread


def _until(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_the_prefetcher_keeps_at_most_depth_segments_and_follows_recovery(tmp_path, spool):
    cfg, source, names = _archive(tmp_path, 9)
    (spool / walspool.REQUEST).write_text(walprefetch.request_text(names[0], MiB))
    prefetcher = walprefetch.Prefetcher(cfg, str(spool), None, depth=3, idle=30)
    thread = _run(prefetcher)

    def segments():
        return sorted(n for n in os.listdir(spool) if walspool.is_segment(n))

    assert _until(lambda: segments() == names[1:4]), segments()
    time.sleep(0.3)
    assert segments() == names[1:4]  # bounded: nothing beyond the depth while nothing is taken
    assert walspool.holder(str(spool)) == os.getpid()
    dest = tmp_path / "RECOVERYXLOG"
    for name in names[1:]:  # recovery takes them in order; each one spooled is the archived file
        assert walspool.claim_waiting(str(spool), name, str(dest)), name
        assert dest.read_bytes() == (source / name).read_bytes()
    assert _until(lambda: not prefetcher.running)
    assert segments() == [] and not thread.join(0.1)  # nothing after the archive's end: still waiting, idle
    (spool / walspool.REQUEST).write_text(walprefetch.request_text(names[2], MiB))  # asked again further back
    assert _until(lambda: segments() == names[3:6]), segments()
    assert _until(lambda: shutil.rmtree(spool, ignore_errors=True) or not spool.exists())  # the spool removed
    thread.join(10)
    assert not thread.is_alive() and not spool.exists()


def test_a_refused_or_missing_segment_is_never_spooled(tmp_path, spool):
    cfg, _source, names = _archive(tmp_path, 6)
    data = sorted((tmp_path / "backups" / "wal").glob(names[3] + "-*.gz"))[0]
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))  # the fourth segment's data object damaged
    (spool / walspool.REQUEST).write_text(walprefetch.request_text(names[0], MiB))
    prefetcher = walprefetch.Prefetcher(cfg, str(spool), None, depth=8, idle=30)
    thread = _run(prefetcher)
    assert _until(lambda: names[3] in prefetcher.failed and not prefetcher.running)
    spooled = sorted(n for n in os.listdir(spool) if not n.startswith((".", "lock", "request")))
    # 02 and 03; 05 too when the second worker had it already (a good file: harmless), never 04 nor a marker
    assert spooled in (names[1:3], names[1:3] + names[4:5]), spooled
    dest = tmp_path / "RECOVERYXLOG"
    assert not walspool.claim_waiting(str(spool), names[3], str(dest))  # not here: the full path refuses it
    with pytest.raises(VerifyError):
        wal_fetch(cfg, names[3], str(dest))
    assert not dest.exists()
    os.rename(spool, tmp_path / "moved")  # the spool replaced: the prefetcher ends
    thread.join(10)
    assert not thread.is_alive()


def test_a_dead_prefetchers_leftovers_are_adopted_or_removed(tmp_path, spool):
    cfg, _source, names = _archive(tmp_path, 4)
    wal_fetch(cfg, names[1], str(spool / names[1]))  # what the killed one had checked and spooled
    _file(spool / (names[2] + walspool.PENDING), b"999999999\n")
    _file(spool / (".%s.99-0000.tmp" % names[2]))
    (spool / walspool.REQUEST).write_text(walprefetch.request_text(names[0], MiB))
    prefetcher = walprefetch.Prefetcher(cfg, str(spool), None, depth=2, idle=2)
    thread = _run(prefetcher)
    assert _until(lambda: names[2] in prefetcher.spooled)
    # the dead one's marker and temp file gone; later segments are promised (markers with our pid): depth 2
    entries = os.listdir(spool)
    assert sorted(n for n in entries if not n.endswith(walspool.PENDING)) == sorted(["lock", "request"] + names[1:3])
    assert {(spool / n).read_text().strip() for n in entries if n.endswith(walspool.PENDING)} == {str(os.getpid())}
    assert names[3] + walspool.PENDING in entries
    thread.join(10)  # idle: it ends and removes the spool (recovery_end_command may never run)
    assert not thread.is_alive() and not spool.exists()


def _cli(*args, cwd):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    return subprocess.run([sys.executable, "-m", "seawall_pgbackup.cli.run"] + list(args), cwd=str(cwd),
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_command_serves_the_spool_before_reading_any_configuration(tmp_path, spool):
    _file(spool / SEG, b"prefetched")
    data = tmp_path  # restore_command's working directory: the data directory
    # a configuration file that does not exist: the full path would fail on it, the fast path never reads it
    done = _cli("--config", str(tmp_path / "missing.json"), "wal-fetch", "--spool", "pg_wal/seawall-prefetch", SEG,
                "pg_wal/RECOVERYXLOG", cwd=data)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (data / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"prefetched"
    # not spooled: the full path, whose answers are unchanged (absent: exit 1, quietly)
    (tmp_path / "backups").mkdir(mode=0o700)
    absent = _cli("--backup-dir", str(tmp_path / "backups"), "wal-fetch", "--spool", "pg_wal/seawall-prefetch",
                  "000000010000000000000009", "pg_wal/RECOVERYXLOG", cwd=data)
    assert absent.returncode == 1 and absent.stderr == "", absent.stderr
    _file(spool / "00000002.history", b"1\t0/3000000\tno recovery target specified\n")
    history = _cli("--backup-dir", str(tmp_path / "backups"), "wal-fetch", "--spool", "pg_wal/seawall-prefetch",
                   "00000002.history", "pg_wal/RECOVERYHISTORY", cwd=data)
    assert history.returncode == 1 and not (data / "pg_wal" / "RECOVERYHISTORY").exists()
    stop = _cli("wal-prefetch-stop", "pg_wal/seawall-prefetch", cwd=data)
    assert stop.returncode == 0 and not spool.exists()
