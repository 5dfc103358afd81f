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
from typing import Any, Dict, List, Optional

from ..core.errors import BackupError
from ..core.fsutil import ensure_private_dir, write_json_atomic

PREFIX = "last-run-"


def job_name(command: str, kind: Optional[str] = None) -> str:
    return "%s-%s" % (command, kind) if command == "create" and kind else command


def run_path(log_dir: str, job: str) -> str:
    return os.path.join(log_dir, "%s%s.json" % (PREFIX, job))


def write_run(log_dir: str, record: Dict[str, Any]) -> None:
    """Replace the job's record atomically; raises BackupError when the directory is not writable."""
    ensure_private_dir(log_dir)
    write_json_atomic(run_path(log_dir, record["job"]), record)


def read_run(log_dir: str, job: str) -> Optional[Dict[str, Any]]:
    try:
        with open(run_path(log_dir, job), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("job") == job else None


def read_runs(log_dir: str) -> List[Dict[str, Any]]:
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


def safe_write_run(log_dir: str, record: Dict[str, Any], warnings: List[str]) -> None:
    try:
        write_run(log_dir, record)
    except BackupError as exc:
        warnings.append("run record not written: %s" % exc)
