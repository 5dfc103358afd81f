# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``wal-receive``: pg_receivewal through a physical replication slot into the stream directory, every completed
file pushed into the archive (docs/wal.md, "Near-zero RPO: wal-receive").

A systemd ``Type=simple`` service with ``Restart=always`` runs it: it creates the slot when missing, runs
``pg_receivewal --no-loop`` and exits non-zero with one line when pg_receivewal ends (the server went away, the
slot was dropped), so systemd starts it again. Each completed segment or .history file is pushed exactly like
``wal-push`` (repo/walarchive.py: every destination; an identical file already archived, e.g. by
archive_command, is a no-op) and removed from the stream directory only after the push succeeded. The
in-progress ``.partial`` stays: wal-fetch serves it when the archive has nothing newer (repo/walstream.py).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..config.connection import DbTarget
from ..config.settings import Config, parse_slot_name
from ..core.errors import BackupError, ConnectionFailed
from ..pg.binaries import ClientTools, any_psql, select_tools
from ..pg.client import server_info
from ..pg.runner import ToolProcess, describe_exit, run
from ..repo.walarchive import WalArchive
from ..repo.walstream import completed, ensure_stream_dir

POLL_SECONDS = 0.5
RETRY_SECONDS = (5, 10, 30, 60)  # a failed push is tried again after these pauses (then every minute)
STOP_GRACE_SECONDS = 2.0  # pg_receivewal ended: a stop signal arriving this soon after is a clean stop
CHILD_STOP_SECONDS = 20.0

Say = Callable[[str], None]


def receivewal_command(tools: ClientTools, target: DbTarget, folder: str, slot: str) -> List[str]:
    """pg_receivewal into ``folder`` through ``slot``; no retry loop of its own (the service restarts us)."""
    return [tools.path("pg_receivewal"), "--dbname=" + target.url, "--no-password", "--directory=" + folder,
            "--slot=" + slot, "--no-loop"]


def create_slot_command(tools: ClientTools, target: DbTarget, slot: str) -> List[str]:
    return [tools.path("pg_receivewal"), "--dbname=" + target.url, "--no-password", "--slot=" + slot,
            "--create-slot", "--if-not-exists"]


@dataclass
class Pusher:
    """Pushes the stream directory's completed files into the archive; a failed one is kept and retried later."""

    cfg: Config
    folder: str
    say: Say
    failures: Dict[str, int] = field(default_factory=dict)   # name -> failed attempts
    next_try: Dict[str, float] = field(default_factory=dict)  # name -> monotonic time of the next attempt
    pushed: List[str] = field(default_factory=list)

    def run(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """One pass: every completed file due, oldest first; returns how many were pushed (and removed)."""
        count = 0
        now = time.monotonic()
        for name in completed(self.folder):
            if stopping():
                break
            if self.next_try.get(name, 0) > now:
                continue
            path = os.path.join(self.folder, name)
            archive = WalArchive(self.cfg)
            try:
                archive.push(path)
            except BackupError as exc:
                attempts = self.failures.get(name, 0)
                pause = RETRY_SECONDS[min(attempts, len(RETRY_SECONDS) - 1)]
                self.failures[name] = attempts + 1
                self.next_try[name] = time.monotonic() + pause
                self.say("wal-receive: cannot push %s (kept, retried in %d s): %s" % (name, pause, exc))
                continue
            finally:
                archive.close()
            try:
                os.unlink(path)  # only now: the archive (and every destination) has it
            except FileNotFoundError:
                pass
            self.failures.pop(name, None)
            self.next_try.pop(name, None)
            self.pushed.append(name)
            count += 1
        return count


class _Stop:
    """SIGTERM/SIGINT while receiving: finish the current push, stop pg_receivewal, exit 0."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def __call__(self) -> bool:
        return self.requested


def wal_receive(cfg: Config, slot: Optional[str] = None, say: Optional[Say] = None,
                poll: float = POLL_SECONDS) -> Dict[str, Any]:
    """Run until SIGTERM/SIGINT (then return what was pushed) or until pg_receivewal ends (BackupError, one line).
    ``slot``: overrides ``cfg.wal_slot``."""
    say = say or (lambda line: sys.stderr.write(line + "\n"))
    slot = parse_slot_name("--slot", slot) if slot is not None else parse_slot_name("BACKUP_WAL_SLOT", cfg.wal_slot)
    target = DbTarget(cfg.require_database_url())
    try:
        folder = ensure_stream_dir(cfg.backup_dir)
        pusher = Pusher(cfg, folder, say)
        with _Stop() as stop:
            pusher.run(stop)  # what an earlier run received but did not push
            if stop():
                return {"slot": slot, "stream": folder, "pushed": pusher.pushed}
            info = server_info(any_psql(cfg.pg_bin_dir), target)
            tools = select_tools(info.major, cfg.pg_bin_dir, tools=("pg_receivewal",))
            env = target.env()
            run(create_slot_command(tools, target, slot), "pg_receivewal", env=env, timeout=60,
                step="wal-receive", error=ConnectionFailed)
            with ToolProcess(receivewal_command(tools, target, folder, slot), "pg_receivewal", env=env) as proc:
                ended: Optional[float] = None
                while not stop():
                    pusher.run(stop)
                    if proc.proc.poll() is not None:
                        ended = ended or time.monotonic()
                        if time.monotonic() - ended >= STOP_GRACE_SECONDS:
                            break  # not a stop of the service (that signals us too): pg_receivewal failed
                    time.sleep(poll)
                if not stop():
                    pusher.run()
                    code = proc.wait()
                    raise ConnectionFailed(describe_exit("pg_receivewal", code, proc.stderr()), step="wal-receive")
                _stop_child(proc)
            pusher.run()  # what pg_receivewal completed while stopping
    finally:
        target.close()
    return {"slot": slot, "stream": folder, "pushed": pusher.pushed}


def _stop_child(proc: ToolProcess) -> None:
    """SIGINT: pg_receivewal flushes its .partial and exits (it keeps the name; the next start continues it)."""
    if proc.proc.poll() is None:
        try:
            proc.proc.send_signal(signal.SIGINT)
        except OSError:
            pass
    try:
        proc.proc.wait(timeout=CHILD_STOP_SECONDS)
    except Exception:  # pylint: disable=broad-except  # TimeoutExpired: killed and reaped
        proc.kill()


__all__ = ["wal_receive", "Pusher", "receivewal_command", "create_slot_command"]
