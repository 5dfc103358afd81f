# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL prefetcher behind ``wal-fetch --spool DIR`` (docs/pitr.md, "Prefetch").

After the full fetch path wrote a segment for recovery, ``after_fetch`` records it in the spool and makes sure
one prefetcher runs (an flock in the spool: never two; a killed one's lock is free again). The prefetcher is a
detached fork of that wal-fetch process (the engine is already loaded) that fetches the segments after the last
one asked for, on the same timeline, ``wal_prefetch`` ahead, into the spool through ``ops.wal.wal_fetch`` (the
checked path: temp file, fsync, rename only once the bytes match the signed record). core/walspool.py serves
them. A file that is absent or refused is simply not spooled: PostgreSQL's request for it takes the full path,
which answers exit 1 or the 200+code refusal as without prefetch.

It ends, removing the spool, when nothing was asked for ``IDLE`` seconds, when the server whose data directory
it runs in is gone, or when the spool disappears (recovery_end_command ``wal-prefetch-stop``). The spool never
holds more than ``wal_prefetch`` segments.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Optional, Set, Tuple

from ..config.settings import Config
from ..core.testpoints import pause
from ..core.walspool import LOCK, PENDING, REQUEST, ensure_spool, holder, is_segment, spool_ok, trace
from ..repo.walarchive import segno_of, wal_name
from .wal import wal_fetch

IDLE = 60.0        # seconds without a request: recovery ended or stopped
POLL = 0.01        # how often the spool is looked at (a listing of at most wal_prefetch files)
MAX_WORKERS = 2    # decompression and decryption are CPU work; recovery replays on another core


def request_text(walname: str, segment_size: int) -> str:
    return "%s %d\n" % (walname, segment_size)


def parse_request(text: str) -> Optional[Tuple[str, int]]:
    """(walname, segment size) from the request file; None when it is not one."""
    parts = text.split()
    if len(parts) != 2 or not is_segment(parts[0]) or not parts[1].isdigit():
        return None
    size = int(parts[1])
    if not (1 << 20) <= size <= (1 << 30) or size & (size - 1):
        return None
    return parts[0], size


def window(walname: str, segment_size: int, depth: int) -> list:
    """The ``depth`` segment names after ``walname`` on its timeline, in order."""
    timeline = int(walname[:8], 16)
    first = segno_of(walname, segment_size) + 1
    return [wal_name(timeline, segno, segment_size) for segno in range(first, first + depth)]


def after_fetch(cfg: Config, spool: str, walname: str, dest: str, destination: Optional[str] = None) -> None:
    """Called after the full path wrote ``walname`` to ``dest``: record it and start a prefetcher if none runs.
    Never raises: prefetching is an optimisation, the fetch already succeeded."""
    depth = int(getattr(cfg, "wal_prefetch", 0) or 0)
    if depth <= 0 or not is_segment(walname) or not hasattr(os, "fork") or not hasattr(os, "setsid"):
        return
    try:
        size = os.stat(dest).st_size
        if not ensure_spool(spool):
            return
        temp = os.path.join(spool, ".%s.%d.tmp" % (REQUEST, os.getpid()))
        with open(temp, "w", encoding="ascii") as handle:
            handle.write(request_text(walname, size))
        os.replace(temp, os.path.join(spool, REQUEST))
        if holder(spool) is None:
            _spawn(cfg, spool, destination, depth)
    except OSError:
        return


def _spawn(cfg: Config, spool: str, destination: Optional[str], depth: int) -> None:
    """Double fork: the prefetcher is nobody's child (PostgreSQL waits for restore_command only)."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:  # the first child
        os.setsid()
        if os.fork():
            os._exit(0)  # pylint: disable=protected-access
        _detach()
        Prefetcher(cfg, spool, destination, depth).run()
    except BaseException:  # pylint: disable=broad-except  # nothing may reach the caller's code in a child
        pass
    os._exit(0)  # pylint: disable=protected-access


def _detach() -> None:
    """No inherited descriptors: a pipe that is the server's or a test's stderr must not stay open while we run."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 4096)


class Prefetcher:
    """One spool's prefetcher; ``run`` returns when it has nothing left to do (docs in the module)."""

    def __init__(self, cfg: Config, spool: str, destination: Optional[str], depth: int,
                 workers: int = MAX_WORKERS, idle: float = IDLE) -> None:
        self.cfg = cfg
        self.spool = spool
        self.destination = destination
        self.depth = max(1, depth)
        self.workers = max(1, min(workers, self.depth))
        self.idle = idle
        self.spooled: Set[str] = set()
        self.failed: Set[str] = set()   # absent or refused since the last request: asked for in full
        self.running: Dict[str, Future] = {}
        self.promised: Set[str] = set()  # names with a marker: wal-fetch waits for them (core/walspool.py)
        self.position: Optional[Tuple[str, int]] = None  # (the last segment recovery took, segment size)
        self.request_stamp: Any = None
        self.last_activity = time.monotonic()
        self.postmaster = os.path.exists("postmaster.pid")  # run in a data directory: watch its server

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        lock = self._lock()
        if lock is None:
            return  # another prefetcher has it
        identity = os.stat(self.spool).st_ino
        trace("prefetcher", str(os.getpid()))
        self._adopt()
        pool = ThreadPoolExecutor(max_workers=self.workers)
        checked = 0.0
        try:
            while True:
                try:
                    if os.stat(self.spool).st_ino != identity:
                        return
                except OSError:
                    return  # removed: recovery ended
                now = time.monotonic()
                if self.postmaster and now - checked > 1.0:
                    checked = now
                    if not _server_alive():
                        break
                self._read_request()
                self._collect()
                self._consumed()
                self._drop_stale()
                self._promise()
                self._submit(pool)
                if not self.running and time.monotonic() - self.last_activity > self.idle:
                    break
                time.sleep(POLL)
            self._remove_spool()
        finally:
            pool.shutdown(wait=True)
            os.close(lock)

    def _lock(self) -> Optional[int]:
        import fcntl  # pylint: disable=import-outside-toplevel  # POSIX only, as fork

        path = os.path.join(self.spool, LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        return fd

    def _adopt(self) -> None:
        """What a killed prefetcher left: its spooled segments were checked (kept, counted against the depth);
        its markers and temp files are removed."""
        for entry in os.listdir(self.spool):
            if is_segment(entry):
                self.spooled.add(entry)
            elif entry.endswith((PENDING, ".tmp")):
                _unlink(os.path.join(self.spool, entry))

    def _remove_spool(self) -> None:
        """Idle, or the server is gone: nothing will take what is spooled (recovery_end_command may never run)."""
        for future in self.running.values():
            future.cancel()
        if spool_ok(self.spool):
            shutil.rmtree(self.spool, ignore_errors=True)

    # ------------------------------------------------------------------ one round

    def _read_request(self) -> None:
        path = os.path.join(self.spool, REQUEST)
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stamp == self.request_stamp:
                return
            with open(path, encoding="ascii") as handle:
                parsed = parse_request(handle.read(100))
        except (OSError, ValueError):
            return
        self.request_stamp = stamp
        self.last_activity = time.monotonic()
        self.failed.clear()
        if parsed is not None:
            self.position = parsed

    def _consumed(self) -> None:
        """Spooled files that are gone were served (core/walspool.claim): recovery is past them."""
        for name in sorted(self.spooled):
            if not os.path.lexists(os.path.join(self.spool, name)):
                self.spooled.discard(name)
                self.last_activity = time.monotonic()
                if self.position and name[:8] == self.position[0][:8] and name > self.position[0]:
                    self.position = (name, self.position[1])

    def _wanted(self) -> list:
        if self.position is None:
            return []
        return window(self.position[0], self.position[1], self.depth)

    def _drop_stale(self) -> None:
        """Spooled files recovery will not ask for (behind it, or of another timeline): removed."""
        wanted = set(self._wanted())
        for name in sorted(self.spooled - wanted):
            self.spooled.discard(name)
            _unlink(os.path.join(self.spool, name))

    def _promise(self) -> None:
        """Markers for the segments this prefetcher will fetch, further ahead than the spool's depth: recovery may
        take spooled files faster than this loop sees them go, and a wal-fetch asking for a promised segment waits
        for it rather than fetch it a second time. A promise ends with the file, or with its fetch failing (absent,
        refused: then for every segment after it too)."""
        wanted = []
        if self.position is not None:
            for name in window(self.position[0], self.position[1], 2 * self.depth):
                if name in self.failed:
                    break
                if name not in self.spooled:
                    wanted.append(name)
        for name in sorted(self.promised - set(wanted) - set(self.running)):
            self.promised.discard(name)
            _unlink(os.path.join(self.spool, name + PENDING))
        for name in wanted:
            if name in self.promised:
                continue
            try:
                with open(os.path.join(self.spool, name + PENDING), "w", encoding="ascii") as handle:
                    handle.write("%d\n" % os.getpid())
            except OSError:
                return
            self.promised.add(name)

    def _submit(self, pool: ThreadPoolExecutor) -> None:
        for name in self._wanted():
            if name in self.failed:
                return  # recovery stops there (or refuses it): nothing after it is needed yet
            if name in self.spooled or name in self.running:
                continue
            if len(self.running) >= self.workers or len(self.spooled) + len(self.running) >= self.depth:
                return
            self.running[name] = pool.submit(self._fetch, name)

    def _fetch(self, name: str) -> bool:
        pause("wal-prefetch")  # tests: slow enough to be killed in the middle
        return wal_fetch(self.cfg, name, os.path.join(self.spool, name), self.destination)

    def _collect(self) -> None:
        for name, future in list(self.running.items()):
            if not future.done():
                continue
            del self.running[name]
            try:
                found = future.result()
            except Exception:  # pylint: disable=broad-except  # refused or failed: the full path says so
                found = False
            if not found:
                self.failed.add(name)
            else:
                trace("prefetched", name)
                if name in self._wanted():
                    self.spooled.add(name)
                else:  # recovery went past it (asked for it in full meanwhile)
                    _unlink(os.path.join(self.spool, name))
            self.promised.discard(name)  # spooled, failed or passed: either way no longer to wait for
            _unlink(os.path.join(self.spool, name + PENDING))  # after the file: a waiting wal-fetch claims it


def _server_alive() -> bool:
    """The postmaster of the data directory we run in (its postmaster.pid) is alive."""
    try:
        with open("postmaster.pid", encoding="ascii") as handle:
            pid = int(handle.readline().strip() or "0")
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["after_fetch", "Prefetcher", "window", "parse_request", "request_text", "IDLE"]
