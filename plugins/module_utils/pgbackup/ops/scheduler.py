# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``seawall-pgbackup schedule``: the jobs' timers in one foreground process (containers, no systemd, no cron).

Each job runs as the timers run it: a child ``seawall-pgbackup <arguments>``, so the lock, the run record,
metrics and notifications are the same code path whoever starts it. Rules, as the systemd units have them:

* the job table and its schedules are config/jobs.py's, the times core/nextrun.py's (systemd's DST rules);
* jobs that take the repository lock run one after another in a queue (the units' flock), health beside them;
* a job still running (or queued) at its next time is skipped: logged and counted in logs/schedule-state.json
  (metrics: ``seawall_backup_schedule_skipped_total``);
* at start, a job whose last run (logs/last-run-<job>.json) is older than its last scheduled time runs once
  (``Persistent=true``), and slots missed while a run took long collapse into one;
* ``jitter``: each run starts up to that many seconds late, at random (``RandomizedDelaySec=``);
* stop: no new runs; a running job gets ``grace`` seconds, then SIGTERM to its process group (the engine removes
  its partial files, as when systemd stops a unit), then SIGKILL after ``KILL_AFTER`` seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from ..config.jobs import Job
from ..core.clock import iso, utc_now
from ..core.cron import Cron
from ..core.errors import BackupError
from ..core.fsutil import write_json_atomic
from ..core.nextrun import catch_up, next_run
from ..model.runrecord import job_name, read_run
from ..observe.metrics import SCHEDULE_STATE as STATE_FILE

KILL_AFTER = 10.0        # seconds between the job's SIGTERM and SIGKILL (its cleanup takes well under that)
LIVE_WITHIN = 60.0       # /livez: the loop ticked within this many seconds
HEARTBEAT_EVERY = 30.0   # seconds between heartbeat writes to the state file
TICK = 1.0               # the loop's sleep: times are minutes, a second is precise enough
RUN_MODULE = "seawall_pgbackup.cli.run"
HOST_COMMAND = "seawall-pgbackup"


def engine_command() -> List[str]:
    """How to run this engine: the installed command we run as, else ``python -m RUN_MODULE``."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == HOST_COMMAND and os.access(argv0, os.X_OK):
        return [argv0]
    return [sys.executable, "-m", RUN_MODULE]


def spawn_engine(arguments: Sequence[str]) -> "subprocess.Popen[bytes]":
    """A job's process: its own session (Ctrl-C on the terminal reaches only the scheduler, which gives the job
    its grace), stdout onto our stderr (our stdout carries one line per event)."""
    # pylint: disable-next=consider-using-with  # the scheduler polls and reaps it
    return subprocess.Popen(engine_command() + list(arguments), stdin=subprocess.DEVNULL,
                            stdout=sys.stderr.fileno(), start_new_session=True)


@dataclass
class Slot:
    """One job's schedule state."""

    job: Job
    cron: Cron
    due: Optional[datetime] = None       # the scheduled time of the next run
    fire_at: Optional[datetime] = None   # due + jitter
    queued: Optional[str] = None         # "scheduled" or "caught-up" while waiting for the lock queue
    process: Any = None
    started: float = 0.0


class Scheduler:
    """The loop's state; ``tick()`` does one round. The clock, the spawner and the output are injectable."""

    def __init__(self, jobs: Sequence[Job], zone: tzinfo, log_dir: str, *, global_args: Sequence[str] = (),
                 jitter: int = 0, spawn: Callable[[Sequence[str]], Any] = spawn_engine,
                 now: Callable[[], datetime] = utc_now, monotonic: Callable[[], float] = time.monotonic,
                 out: Optional[TextIO] = None, log_format: str = "text", rng: Optional[random.Random] = None) -> None:
        self.zone = zone
        self.log_dir = log_dir
        self.global_args = list(global_args)
        self.jitter = jitter
        self.spawn = spawn
        self.now = now
        self.monotonic = monotonic
        self.out = out or sys.stdout
        self.log_format = log_format
        self.rng = rng or random.Random()
        self.slots: Dict[str, Slot] = {}
        self.queue: List[str] = []
        self.state = self._read_state()
        self.last_tick = monotonic()
        self.last_heartbeat = 0.0
        self.stopping = False
        self._set_jobs(jobs)

    # ------------------------------------------------------------------ events and state

    def emit(self, event: str, job: str = "", **fields: Any) -> None:
        record: Dict[str, Any] = {"time": iso(self.now()), "job": job, "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        if self.log_format == "json":
            line = json.dumps(record, sort_keys=False)
        else:
            line = " ".join([record["time"], event] + ([job] if job else [])
                            + ["%s=%s" % (k, v) for k, v in record.items() if k not in ("time", "job", "event")])
        self.out.write(line + "\n")
        self.out.flush()

    def _read_state(self) -> Dict[str, Any]:
        try:
            with open(os.path.join(self.log_dir, STATE_FILE), encoding="utf-8") as handle:
                state = json.load(handle)
            if isinstance(state, dict) and isinstance(state.get("skipped"), dict):
                return {"skipped": {str(k): int(v) for k, v in state["skipped"].items()}}
        except (OSError, ValueError, TypeError, OverflowError):  # OverflowError: a count of Infinity
            pass  # none yet, or unreadable: counters start again (a counter reset is what Prometheus expects)
        return {"skipped": {}}

    def _write_state(self) -> None:
        if not os.path.isdir(self.log_dir):  # a new repository: its first run creates logs/ (0700) itself
            return
        document = {"skipped": self.state["skipped"], "heartbeat": iso(self.now()), "pid": os.getpid(),
                    "jobs": {name: iso(slot.due) for name, slot in sorted(self.slots.items()) if slot.due}}
        try:
            write_json_atomic(os.path.join(self.log_dir, STATE_FILE), document)
        except Exception as exc:  # pylint: disable=broad-except  # the state file never stops the scheduler
            self.emit("state-not-written", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        self.last_heartbeat = self.monotonic()

    def alive(self) -> bool:
        """For /livez: the loop ticked recently."""
        return self.monotonic() - self.last_tick < LIVE_WITHIN

    # ------------------------------------------------------------------ planning

    def _set_jobs(self, jobs: Sequence[Job]) -> None:
        """Plan every enabled job from now; a running or queued job keeps its process or its place."""
        now = self.now()
        old, self.slots = self.slots, {}
        for job in jobs:
            if not job.enabled:
                continue
            slot = Slot(job, Cron(job.schedule))
            previous = old.pop(job.name, None)
            if previous is not None:
                slot.process, slot.started, slot.queued = previous.process, previous.started, previous.queued
            self._plan(slot, now)
            self.slots[job.name] = slot
        for name, previous in old.items():  # no longer scheduled: a running run finishes, nothing more
            if previous.process is not None:
                previous.due = previous.fire_at = previous.queued = None
                self.slots[name] = previous
        self.queue = [name for name in self.queue if name in self.slots and self.slots[name].queued]

    def _plan(self, slot: Slot, after: datetime) -> None:
        slot.due = next_run(slot.cron, after, self.zone)
        delay = self.rng.uniform(0, self.jitter) if self.jitter > 0 else 0.0
        slot.fire_at = slot.due + timedelta(seconds=delay) if slot.due else None

    def start(self) -> None:
        """Print every job's next run; queue the catch-up runs (one per job at most)."""
        now = self.now()
        for name, slot in self.slots.items():
            self.emit("scheduled", name, schedule=slot.job.schedule, next=iso(slot.due) if slot.due else "never",
                      arguments=" ".join(slot.job.arguments))
        for name, slot in self.slots.items():
            missed = catch_up(slot.cron, self.zone, self._last_run(slot.job), now)
            if missed is not None:
                self.emit("catching-up", name, missed=iso(missed))
                self._fire(slot, "caught-up")
        self._write_state()

    def _last_run(self, job: Job) -> Optional[datetime]:
        command = job.arguments[0]
        kind = job.kind or None
        try:
            record = read_run(self.log_dir, job_name(command, kind))
        except Exception:  # pylint: disable=broad-except  # an unreadable record: no catch-up from it
            return None
        return record.started_at if record else None

    def reload(self, jobs: Sequence[Job]) -> None:
        self._set_jobs(jobs)
        for name, slot in self.slots.items():
            if slot.due is not None:
                self.emit("scheduled", name, schedule=slot.job.schedule, next=iso(slot.due))

    # ------------------------------------------------------------------ one round

    def tick(self) -> None:
        self.last_tick = self.monotonic()
        self._reap()
        if not self.stopping:
            now = self.now()
            for slot in self.slots.values():
                if slot.fire_at is not None and now >= slot.fire_at:
                    self._plan(slot, now)  # the next time after now: missed slots collapse into this one run
                    self._fire(slot, "scheduled")
            self._start_queued()
        if self.monotonic() - self.last_heartbeat >= HEARTBEAT_EVERY:
            self._write_state()

    def _busy(self, slot: Slot) -> bool:
        return slot.process is not None or slot.queued is not None

    def _fire(self, slot: Slot, reason: str) -> None:
        name = slot.job.name
        if self._busy(slot):
            skipped = self.state["skipped"].get(name, 0) + 1
            self.state["skipped"][name] = skipped
            self.emit("skipped", name, reason="still running" if slot.process else "still queued",
                      skipped_total=skipped)
            self._write_state()
            return
        slot.queued = reason
        self.queue.append(name)
        self._start_queued()

    def _start_queued(self) -> None:
        locked = any(s.process is not None and s.job.locks for s in self.slots.values())
        for name in list(self.queue):
            slot = self.slots.get(name)
            if slot is None:
                self.queue.remove(name)
                continue
            if slot.job.locks and locked:
                continue  # behind the running job that holds the lock, in order
            self.queue.remove(name)
            self._launch(slot)
            locked = locked or slot.job.locks

    def _launch(self, slot: Slot) -> None:
        reason, slot.queued = slot.queued, None
        try:
            slot.process = self.spawn(self.global_args + list(slot.job.arguments))
        except OSError as exc:
            self.emit("failed-to-start", slot.job.name, error=exc.strerror or str(exc))
            return
        slot.started = self.monotonic()
        self.emit("caught-up" if reason == "caught-up" else "started", slot.job.name,
                  pid=getattr(slot.process, "pid", None))

    def _reap(self) -> None:
        for slot in self.slots.values():
            if slot.process is None:
                continue
            code = slot.process.poll()
            if code is None:
                continue
            slot.process = None
            duration = round(self.monotonic() - slot.started, 3)
            self.emit("finished", slot.job.name, exit_code=code, status=_status(slot.job, code),
                      duration_seconds=duration)

    def running(self) -> List[Slot]:
        return [s for s in self.slots.values() if s.process is not None]

    # ------------------------------------------------------------------ stopping

    def stop(self, grace: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """No new runs; wait ``grace`` seconds for running jobs, then SIGTERM their process groups, then SIGKILL."""
        self.stopping = True
        for name in self.queue:
            self.emit("cancelled", name, reason="stopping")
        self.queue = []
        for slot in self.slots.values():
            slot.queued = None
        for phase, wait in ((None, grace), (signal.SIGTERM, KILL_AFTER), (signal.SIGKILL, KILL_AFTER)):
            if phase is not None:
                for slot in self.running():
                    self.emit("terminating" if phase == signal.SIGTERM else "killing", slot.job.name)
                    _signal_group(slot.process, phase)
            deadline = self.monotonic() + wait
            while self.running() and self.monotonic() < deadline:
                sleep(0.2)
                self._reap()
            if not self.running():
                break
        self._reap()
        self._write_state()


def _status(job: Job, code: int) -> str:
    if code == 0:
        return "ok"
    if job.name == "health" and code == 1:  # Nagios: warning is not a failed run (the units' SuccessExitStatus=1)
        return "warning"
    return "failed"


def _signal_group(process: Any, signum: int) -> None:
    """The job's process group, like systemd's KillMode=control-group: pg_dump and friends too."""
    try:
        os.killpg(process.pid, signum)
    except (OSError, AttributeError):
        try:
            process.send_signal(signum)
        except OSError:
            pass


class Signals:
    """What the signal handlers asked for; the loop acts on it between ticks."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False


def run_loop(scheduler: Scheduler, reload: Callable[[], Any], grace: float, signals: Signals,
             sleep: Callable[[float], None] = time.sleep) -> int:
    """Schedule until ``signals.stop``; ``signals.reload`` calls ``reload()`` -> (jobs, zone, jitter).

    A configuration that does not load is logged in one line and the running one kept.
    """
    scheduler.start()
    while not signals.stop:
        if signals.reload:
            signals.reload = False
            try:
                jobs, zone, jitter = reload()
            except BackupError as exc:
                scheduler.emit("reload-failed", error=str(exc).splitlines()[0], kept="the previous configuration")
            else:
                scheduler.zone, scheduler.jitter = zone, jitter
                scheduler.emit("reloaded")
                scheduler.reload(jobs)
        scheduler.tick()
        if not signals.stop and not signals.reload:
            sleep(TICK)
    scheduler.emit("stopping", grace=grace, running=",".join(s.job.name for s in scheduler.running()) or None)
    scheduler.stop(grace, sleep)
    scheduler.emit("stopped")
    return 0
