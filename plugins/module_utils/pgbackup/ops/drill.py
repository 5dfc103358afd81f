# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disaster-recovery drill: restore the newest good full backup for real, check it, time it.

The report (JSON, under ``BACKUP_DIR/logs/``) says which backup, where, whether it restored
intact and how long the restore took: the recovery time objective measured, not guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import iso, utc_now
from ..core.duration import format_duration
from ..core.errors import BackupError, VerifyError
from ..model.drillreport import LATEST_REPORT
from ..model.manifest import Backup
from ..model.drillreport import read_latest, write_report
from ..model.record import RecordError
from ..repo.catalog import Repository, open_repository
from .verify import DEFAULT_KIND, age_of, check_settings, verify_and_record


class DrillFailed(VerifyError):
    """The drill ran and failed (or could not run); ``report`` is the report written for it."""

    def __init__(self, message: str, report: Dict[str, Any], cause: Optional[BackupError] = None) -> None:
        super().__init__(message, step=cause.step if cause else None)
        self.report = report
        if cause is not None:  # the drill could not run: the exit code says why, not "the backup is bad"
            self.kind, self.exit_code = cause.kind, cause.exit_code


def report_path(cfg: Config) -> str:
    return os.path.join(Repository(cfg.backup_dir).log_dir, LATEST_REPORT)


def read_report(path: str) -> Optional[Dict[str, Any]]:
    """The report at ``path`` (logs/drill-latest.json) in its JSON shape; None when missing or invalid."""
    try:
        report = read_latest(os.path.dirname(path))
    except RecordError:
        return None  # never a reason to skip a drill
    return report.to_dict() if report is not None else None


@dataclass
class DrillPlan:
    """What a drill run would do: drill ``backup`` (the newest good full one), or skip for a recent drill."""

    backup: Backup
    report_path: str
    previous: Optional[Dict[str, Any]] = None  # the recent successful report that makes the run skip
    skip_reason: Optional[str] = None

    @property
    def runs(self) -> bool:
        return self.skip_reason is None

    @property
    def reason(self) -> str:
        return self.skip_reason or "a DR drill of %s" % self.backup.id


def plan_drill(cfg: Config, max_age: int = 0) -> DrillPlan:
    """The backup the drill restores; with ``max_age`` (seconds), skip when logs/drill-latest.json reports a
    successful drill of this database that finished less than that long ago (whichever backup it restored)."""
    database = DbTarget(cfg.require_database_url()).dbname
    newest = open_repository(cfg).find("latest", kind=DEFAULT_KIND, database=database)
    plan = DrillPlan(newest, report_path(cfg))
    if max_age > 0:
        previous = read_report(plan.report_path)
        age = age_of(previous.get("finished_at")) if previous else None
        if previous and previous.get("ok") is True and previous.get("database") in (database, None) \
                and age is not None and age < max_age:
            plan.previous = previous
            plan.skip_reason = ("the DR drill of %s succeeded %s ago (RTO %s s), younger than max_age %s"
                                % (previous.get("backup_id"), format_duration(age), previous.get("rto_seconds"),
                                   format_duration(max_age)))
    return plan


def run_drill(cfg: Config, server_url: Optional[str] = None, probes: Optional[Sequence[str]] = None,
              with_globals: Optional[bool] = None, plan: Optional[DrillPlan] = None) -> Dict[str, Any]:
    """Run the drill (unless ``plan`` skips it: then the previous report); the report is written whatever
    the outcome, and a failed drill raises DrillFailed afterwards.

    Unset options take the one default of every front end (``verify.check_settings``): probes from the
    configuration, roles first only on another server than DATABASE_URL's.
    """
    if plan is not None and not plan.runs:
        return dict(plan.previous or {})
    source = DbTarget(cfg.require_database_url())
    server, probes, with_globals = check_settings(cfg, server_url, probes, with_globals)
    server = server or source
    repo = open_repository(cfg)
    backup = plan.backup if plan is not None else repo.find("latest", kind=DEFAULT_KIND, database=source.dbname)
    started = utc_now()
    cause: Optional[BackupError] = None
    try:
        result = verify_and_record(cfg, backup.id, level="restore", server=server, probes=probes,
                                   with_globals=with_globals)[0]
    except BackupError as exc:  # the drill could not run: that is a failed drill too, and it is reported
        cause = exc
        result = {"ok": False, "details": "%s (step %s)" % (exc, exc.step),
                  "duration_seconds": round((utc_now() - started).total_seconds(), 3)}
    report = {
        "kind": "dr-drill",
        "backup_id": backup.id,
        "database": backup.database,
        "backup_created_at": iso(backup.created_at),
        "server": server.hostinfo,
        "started_at": iso(started),
        "finished_at": iso(utc_now()),
        "ok": result["ok"],
        "rto_seconds": result.get("rto_seconds"),
        "duration_seconds": result["duration_seconds"],
        "details": result["details"],
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    write_report(repo.log_dir, report, stamp)
    server.close()
    source.close()
    if not report["ok"]:
        raise DrillFailed("DR drill failed: %s" % report["details"], report, cause)
    return report
