# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL prefetch spool: what ``wal-fetch --spool DIR`` serves without starting the engine (docs/pitr.md).

restore_command starts one process per WAL file; loading the engine (imports, configuration, keys, records)
costs about 0.2 s of it. ops/walprefetch.py fetches the next segments in the background into DIR, through the
checked fetch path (written as a temp file, fsynced, renamed to the segment's name only once the stored and the
raw bytes matched the signed record). This module is the other half, run at the CLI's entry before anything
heavy is imported: when DIR holds the asked segment under its exact name, it is moved to DEST and the command
exits 0. Anything else (a history file, a name not spooled, a temp file, a link, a spool we do not own) falls
through to the full fetch, which alone answers "absent" (exit 1) or refuses (200 + code).

Standard library only, and only modules the interpreter has loaded at startup (os, sys, stat): this runs for
every WAL file recovery replays.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence  # typing would import re: about 8 ms of every call

SPOOL = os.path.join("pg_wal", "seawall-prefetch")  # relative to the data directory: restore_command's cwd
LOCK = "lock"        # the prefetcher's flock and pid
REQUEST = "request"  # "<walname> <segment size>": the last file the full fetch path wrote
PENDING = ".pending"  # "<walname>.pending" holds the pid of the prefetcher fetching that segment right now
WAIT = 30.0  # at most this long for a pending segment, then the full path fetches it too
HEX = frozenset("0123456789ABCDEF")
# Options before or after the command that take a value (cli/main.py's parser); anything unknown: no fast path.
_VALUED = ("--config", "--backup-dir", "--pg-bin-dir", "--destination", "--spool")
_FLAGS = ("--accept-unsigned", "--accept-unencrypted")
TRACE = "SEAWALL_TEST_WAL_FETCH_TRACE"  # tests only: a file each wal-fetch appends "<path> <name>" to


def is_segment(name: str) -> bool:
    """A WAL segment's name (24 upper-case hex digits): the only files ever spooled."""
    return len(name) == 24 and not set(name) - HEX


def trace(event: str, name: str) -> None:
    path = os.environ.get(TRACE)
    if path:
        import time  # pylint: disable=import-outside-toplevel  # built in; tests only
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("%s %s %.3f\n" % (event, name, time.time()))


def spool_ok(spool: str) -> bool:
    """The spool is a real directory (not a link) of this user that nobody else can enter."""
    if not hasattr(os, "geteuid"):
        return False  # no owner and mode to check (Windows): never used
    try:
        st = os.lstat(spool)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def ensure_spool(spool: str) -> bool:
    """Create the spool (0700) when absent; True when it is one we may use (``spool_ok``)."""
    try:
        os.mkdir(spool, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    return spool_ok(spool)


def claim(spool: str, name: str, dest: str) -> bool:
    """Move the spooled ``name`` to ``dest`` (True), or leave everything as it is (False: fetch it in full).

    Only a regular file under the segment's exact name, opened without following a link, in a spool we own;
    the rename is the claim (atomic: a concurrent cleanup either loses the file to us or we fall back), and
    what arrived at ``dest`` must be the very file that was checked (same device and inode)."""
    if not is_segment(name) or not spool_ok(spool):
        return False
    path = os.path.join(spool, name)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_nlink != 1:
            return False
        try:
            os.rename(path, dest)  # same file system: the spool is in pg_wal, DEST is pg_wal/RECOVERYXLOG
        except OSError:
            return False
        try:
            moved = os.lstat(dest)
        except OSError:
            return False
        if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):  # swapped in between: not ours to serve
            try:
                os.unlink(dest)
            except OSError:
                pass
            return False
        return True
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def claim_waiting(spool: str, name: str, dest: str, wait: float = WAIT) -> bool:
    """``claim``, waiting while the prefetcher is fetching ``name`` (its marker names a live pid): recovery often
    asks for the segment the prefetcher is decoding, and waiting a few milliseconds beats the full path."""
    if claim(spool, name, dest):
        return True
    if not is_segment(name):
        return False
    import time  # pylint: disable=import-outside-toplevel  # built in; only when a segment is pending

    marker = os.path.join(spool, name + PENDING)
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            fd = os.open(marker, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                text = os.read(fd, 32).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
        except OSError:
            return claim(spool, name, dest)  # done: spooled (renamed before the marker goes) or failed
        if not text.isdigit() or not _alive(int(text)) or time.monotonic() > deadline:
            return False  # a killed prefetcher's marker: the full path
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
        if claim(spool, name, dest):
            return True


def parse_fetch(argv: Sequence[str]) -> tuple[str, str, str] | None:
    """(spool, walname, dest) of a ``wal-fetch --spool DIR NAME DEST`` command line; None for anything else."""
    command = None
    spool = None
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("--"):
            key = word.split("=", 1)[0]
            if key in _VALUED:
                if "=" in word:
                    value = word.split("=", 1)[1]
                elif i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                else:
                    return None
                if key == "--spool":
                    spool = value
            elif word not in _FLAGS:
                return None  # --help, --version, --, an option of a newer version: the parser decides
        elif word.startswith("-"):
            return None
        elif command is None:
            command = word
        else:
            positional.append(word)
        i += 1
    if command != "wal-fetch" or not spool or len(positional) != 2:
        return None
    return spool, positional[0], positional[1]


def parse_stop(argv: Sequence[str]) -> str | None:
    """The spool of a ``wal-prefetch-stop DIR`` command line (recovery_end_command); None otherwise."""
    words = [w for w in argv if not w.startswith("-")]
    if len(words) == 2 and words[0] == "wal-prefetch-stop" and len(words) == len(argv):
        return words[1]
    return None


def fast(argv: Sequence[str]) -> int | None:
    """The exit status when this command line is served here; None: run the full command (also after any
    unexpected error here: a crash would exit 1, which PostgreSQL takes for "not archived")."""
    try:
        return _fast(argv)
    except Exception:  # pylint: disable=broad-except
        return None


def _fast(argv: Sequence[str]) -> int | None:
    fetch = parse_fetch(argv)
    if fetch is not None:
        spool, name, dest = fetch
        if claim_waiting(spool, name, dest):
            trace("spool", name)
            return 0
        return None
    spool = parse_stop(argv)
    if spool is not None:
        stop(spool)
        return 0
    return None


def at_entry() -> None:
    """Called where the installed command imports the CLI: serve from the spool and exit, or return."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("seawall-pgbackup", "seawall-pgbackup.exe") and len(sys.argv) > 2:
        code = fast(sys.argv[1:])
        if code is not None:
            raise SystemExit(code)


def holder(spool: str) -> int | None:
    """The pid of the running prefetcher of ``spool`` (its flock is held), else None. 0: held, pid not yet written."""
    try:
        import fcntl  # pylint: disable=import-outside-toplevel  # POSIX only; not loaded on the fast path
    except ImportError:
        return None
    try:
        fd = os.open(os.path.join(spool, LOCK), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop(spool: str, wait: float = 5.0) -> None:
    """recovery_end_command: end the prefetcher (SIGTERM) and remove the spool with whatever it holds."""
    import shutil  # pylint: disable=import-outside-toplevel
    import signal  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    if not spool_ok(spool):
        return
    deadline = time.monotonic() + wait
    pid = holder(spool)
    while pid is not None and time.monotonic() < deadline:
        if pid > 0 and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        time.sleep(0.05)
        pid = holder(spool)
    shutil.rmtree(spool, ignore_errors=True)  # a prefetcher still running finds its spool gone and exits
