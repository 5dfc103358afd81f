# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The last run of each job, one small JSON file each: ``logs/last-run-<job>.json``.

A job is a command, with the backup kind for ``create`` (``create-full``, ``verify``, ``health``).
A record says ``running`` from the start of a run and its outcome at the end, so a run killed
outright stays visible as ``running`` with its start time. Health and metrics read these files;
the catalog stays the truth about backups.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Union

from ..core.errors import BackupError
from ..core.fsutil import ensure_private_dir, write_json_atomic
from .record import Fail, Record, RecordError

PREFIX = "last-run-"
STATUSES = ("running", "ok", "failed", "warning", "critical")
JOB_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass
class RunRecord(Record):
    """The last run of one job, as the run hook writes it (``running`` first, the outcome at the end)."""

    job: str
    command: str
    status: str
    started_at: datetime
    kind: Optional[str] = None
    database: Optional[str] = None
    host: Optional[str] = None
    pid: Optional[int] = None
    finished_at: Optional[datetime] = None
    exit_code: Optional[int] = None
    duration_seconds: Optional[float] = None
    step: Optional[str] = None
    error: Optional[str] = None
    summary: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"job", "command", "status", "started_at"})
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset({"pid", "finished_at", "exit_code", "duration_seconds", "step",
                                                    "error", "summary"})
    LABEL = "run record"

    def check(self, where: str, fail: Fail) -> None:
        if not JOB_PATTERN.match(self.job):
            raise fail("job %r is not a job name" % self.job[:80])
        if self.status not in STATUSES:
            raise fail("status %r is not one of %s" % (self.status[:40], ", ".join(STATUSES)))


def job_name(command: str, kind: Optional[str] = None) -> str:
    return "%s-%s" % (command, kind) if command == "create" and kind else command


def run_path(log_dir: str, job: str) -> str:
    return os.path.join(log_dir, "%s%s.json" % (PREFIX, job))


def write_run(log_dir: str, record: Union[RunRecord, Mapping[str, Any]]) -> None:
    """Replace the job's record atomically; raises BackupError when the directory is not writable.

    A dict is checked as a RunRecord first: what is written is always readable back.
    """
    if not isinstance(record, RunRecord):
        record = RunRecord.from_dict(dict(record))
    ensure_private_dir(log_dir)
    write_json_atomic(run_path(log_dir, record.job), record.to_dict())


def parse_run(log_dir: str, job: str) -> RunRecord:
    """The job's record; raises RecordError saying why it is missing, unreadable or wrong."""
    path = run_path(log_dir, job)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise RecordError("%s: cannot be read: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise RecordError("%s: not valid JSON: %s" % (path, exc)) from None
    record = RunRecord.from_dict(document, path)
    if record.job != job:
        raise RecordError("%s: holds the record of job %r" % (path, record.job))
    return record


def read_run(log_dir: str, job: str) -> Optional[RunRecord]:
    """The job's record, or None when there is none or it cannot be trusted."""
    try:
        return parse_run(log_dir, job)
    except RecordError:
        return None


def read_runs(log_dir: str) -> List[RunRecord]:
    """Every job's last record, by job name; unreadable files are skipped."""
    try:
        names = sorted(os.listdir(log_dir))
    except OSError:
        return []
    records = []
    for name in names:
        if name.startswith(PREFIX) and name.endswith(".json"):
            record = read_run(log_dir, name[len(PREFIX):-len(".json")])
            if record is not None:
                records.append(record)
    return records


def safe_write_run(log_dir: str, record: Union[RunRecord, Mapping[str, Any]], warnings: List[str]) -> None:
    try:
        write_run(log_dir, record)
    except BackupError as exc:
        warnings.append("run record not written: %s" % exc)
