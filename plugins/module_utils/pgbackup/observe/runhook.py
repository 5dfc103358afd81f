# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What happens around every create, cleanup, verify, drill and health run: the one hook the CLI calls.

Before: validate the monitoring settings, record the run as running, ping the dead-man's switch's
``/start``. After: record the outcome, rebuild the metrics file, send the notifications that apply,
ping success or ``/fail`` with the log excerpt. Everything after the run is best effort: a failure
there is logged as a warning in logs/backup.log and never changes the run's exit status.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..config.connection import DbTarget
from ..config.monitoring import MONITORED_COMMANDS, MonitoringSettings, load_monitoring
from ..config.settings import Config
from ..core.clock import iso, utc_now
from ..core.errors import BackupError, exit_code_of
from ..core.fsutil import ensure_private_dir
from ..core.runlog import RunLog
from ..model.runrecord import RunRecord, job_name, read_run, safe_write_run
from ..repo.catalog import Repository, present
from .metrics import metrics_text, textfile_targets, write_textfile
from .notify import deliver, hint_for, ping

EXCERPT_LINES = 20
EXCERPT_CHARS = 4000
HEALTH_STATUS = {0: "ok", 1: "warning", 2: "critical"}


class RunMonitor:
    """One monitored run. ``start()`` may raise ConfigError; ``finish()`` never raises."""

    def __init__(self, cfg: Config, command: str, kind: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None) -> None:
        self.cfg = cfg
        self.command = command
        self.kind = kind
        self.env = os.environ if env is None else env
        self.job = job_name(command, kind)
        self.repo = Repository(cfg.backup_dir)
        self.log = RunLog(self.repo.log_dir)
        self.database = DbTarget(cfg.database_url).dbname if cfg.database_url else None
        self.settings: Optional[MonitoringSettings] = None
        self.started = utc_now()
        self.clock = time.monotonic()
        self.log_offset = 0
        self.previous: Optional[RunRecord] = None
        self.warnings: List[str] = []

    def _record(self, status: str, **extra: Any) -> Dict[str, Any]:
        return dict({"job": self.job, "command": self.command, "kind": self.kind, "database": self.database,
                     "host": socket.gethostname(), "status": status, "started_at": iso(self.started)}, **extra)

    def start(self) -> None:
        self.settings = load_monitoring(self.cfg.monitoring, self.env)
        self.log_offset = _size(os.path.join(self.repo.log_dir, "backup.log"))
        if self.command in self.settings.deadmans_commands:
            self._warn_on(ping(self.settings, "start"), "deadmans-switch")
        if os.path.isdir(self.repo.log_dir):  # else a new repository: the run itself creates it (or fails)
            self.previous = read_run(self.repo.log_dir, self.job)
            safe_write_run(self.repo.log_dir, self._record("running", pid=os.getpid()), self.warnings)

    def finish(self, exit_code: int, error: Optional[BaseException] = None,
               report: Optional[Dict[str, Any]] = None) -> None:
        try:
            self._finish(exit_code, error, report)
        except Exception as exc:  # pylint: disable=broad-except  # monitoring never fails the run
            self.log.warning("monitoring-failed", job=self.job, error="%s: %s" % (exc.__class__.__name__, exc))

    def _finish(self, exit_code: int, error: Optional[BaseException], report: Optional[Dict[str, Any]]) -> None:
        settings = self.settings or MonitoringSettings()
        finished = utc_now()
        if self.command == "health" and error is None:
            status = HEALTH_STATUS.get(exit_code, "critical")
        else:
            status = "ok" if exit_code == 0 and error is None else "failed"
        step = getattr(error, "step", "interrupted" if isinstance(error, KeyboardInterrupt) else None)
        message = str(error) if isinstance(error, BackupError) else ("interrupted" if error is not None else None)
        if self.command == "health" and report and status != "ok":
            bad = [c for c in report.get("checks", []) if c.get("status") != "ok"]
            message = "; ".join("%s %s: %s" % (c["check"], c["status"], c["reason"]) for c in bad)
            step = "health"
        record = self._record(status, finished_at=iso(finished), exit_code=exit_code,
                              duration_seconds=round(time.monotonic() - self.clock, 3), step=step, error=message)
        summary = self._summary(status)
        if summary:
            record["summary"] = summary
        try:  # a health run on a new host: the record is what makes the next run's "no change" possible
            ensure_private_dir(self.repo.root, follow=True)  # a configured root may be a symlink
            ensure_private_dir(self.repo.log_dir)
            safe_write_run(self.repo.log_dir, record, self.warnings)
        except BackupError as exc:
            self.warnings.append("run record not written: %s" % exc)
        if settings.metrics_enabled and os.path.isdir(self.repo.root):
            text = metrics_text(self.cfg)
            for directory, mode in textfile_targets(self.cfg, settings.textfile_dir):
                try:
                    write_textfile(directory, text, mode=mode)
                except BackupError as exc:
                    self.warnings.append(str(exc))
        excerpt = self._excerpt()
        if self._should_notify(settings, status):
            event = self._event(record, excerpt)
            for result in deliver(settings, event):
                if result["ok"]:
                    self.log.info("notified", channel=result["channel"], job=self.job, status=status)
                else:
                    self._warn_on(result["error"], result["channel"])
        if self.command in settings.deadmans_commands:
            body = "%s %s on %s: %s\n%s" % (self.job, status, record["host"], message or summary or "", excerpt)
            self._warn_on(ping(settings, "success" if status in ("ok", "warning") else "fail", body),
                          "deadmans-switch")
        for warning in self.warnings:
            self.log.warning("monitoring-failed", job=self.job, error=warning)

    def _should_notify(self, settings: MonitoringSettings, status: str) -> bool:
        if not settings.alerts_enabled or not settings.channels:
            return False
        if self.command == "health":
            # every 15 minutes by default: only a change of state is news
            before = self.previous.status if self.previous else None
            if status == before or (status == "ok" and before is None):
                return False
            if status == "critical":
                return True
            return settings.on_warning if status == "warning" else settings.on_success or before == "critical"
        return status == "failed" or settings.on_success

    def _summary(self, status: str) -> Optional[str]:
        if self.command != "create" or status != "ok":
            return None
        newest = present(self.repo.backups(kind=self.kind, database=self.database))  # not a future-dated one
        if not newest or newest[-1].created_at < self.started.replace(microsecond=0):
            return None
        backup = newest[-1]
        return "backup %s: %d bytes in %.1f s" % (backup.id, backup.size, backup.manifest.duration_seconds or 0)

    def _event(self, record: Dict[str, Any], excerpt: str) -> Dict[str, Any]:
        status = record["status"]
        verb = {"ok": "succeeded", "failed": "FAILED", "warning": "WARNING", "critical": "CRITICAL"}[status]
        title = "[seawall-pgbackup] %s %s on %s%s" % (self.job, verb, record["host"],
                                                      " (%s)" % self.database if self.database else "")
        event = dict(record, event="%s-%s" % (self.command, status), title=title, log_excerpt=excerpt,
                     hint=hint_for(record.get("step")) if status not in ("ok",) else None)
        event.pop("pid", None)
        return event

    def _excerpt(self) -> str:
        """The lines this run appended to logs/backup.log (the newest EXCERPT_LINES)."""
        path = os.path.join(self.repo.log_dir, "backup.log")
        try:
            with open(path, "rb") as handle:
                handle.seek(self.log_offset if _size(path) >= self.log_offset else 0)
                data = handle.read()[-EXCERPT_CHARS * 4:]
        except OSError:
            return ""
        lines = data.decode("utf-8", "replace").splitlines()[-EXCERPT_LINES:]
        return "\n".join(lines)[-EXCERPT_CHARS:]

    def _warn_on(self, error: Optional[str], channel: str) -> None:
        if error:
            self.log.warning("notify-failed", channel=channel, job=self.job, error=error)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def monitored(cfg: Config, command: str, kind: Optional[str], run: Callable[[], Any],
              report: Optional[Callable[[], Optional[Dict[str, Any]]]] = None,
              exit_code: Optional[Callable[[Any], int]] = None) -> Any:
    """Run ``run()`` inside the monitoring of ``command``; its result and exceptions pass through unchanged.

    ``exit_code(result)`` is the run's status for the record (default: the result itself, an int).
    """
    if command not in MONITORED_COMMANDS:
        return run()
    monitor = RunMonitor(cfg, command, kind)
    monitor.start()
    try:
        result = run()
    except (BackupError, KeyboardInterrupt) as exc:
        monitor.finish(exit_code_of(exc), exc)  # the code the CLI exits with (docs/errors.md)
        raise
    monitor.finish(exit_code(result) if exit_code else result, None, report() if report else None)
    return result
