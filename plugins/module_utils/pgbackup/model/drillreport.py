# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DR drill report: ``logs/drill-<time>.json`` per drill and the newest as ``logs/drill-latest.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Dict, FrozenSet, Mapping, Optional, Union

from ..core.fsutil import write_json_atomic
from .record import Record, RecordError

LATEST_REPORT = "drill-latest.json"


@dataclass
class DrillReport(Record):
    """One drill: which backup, restored where, whether intact, and how long the restore took (the RTO)."""

    ok: bool
    kind: str = "dr-drill"
    backup_id: Optional[str] = None
    database: Optional[str] = None
    backup_created_at: Optional[datetime] = None
    server: Optional[str] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    rto_seconds: Optional[float] = None
    duration_seconds: Optional[float] = None
    details: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"ok"})
    LABEL = "drill report"


def write_report(log_dir: str, report: Union[DrillReport, Mapping[str, Any]], stamp: str) -> DrillReport:
    """``drill-<stamp>.json`` and ``drill-latest.json`` (a dict is checked as a DrillReport first)."""
    if not isinstance(report, DrillReport):
        report = DrillReport.from_dict(dict(report))
    document = report.to_dict()
    write_json_atomic(os.path.join(log_dir, "drill-%s.json" % stamp), document)
    write_json_atomic(os.path.join(log_dir, LATEST_REPORT), document)
    return report


def read_latest(log_dir: str) -> Optional[DrillReport]:
    """The newest report; None when no drill has run; RecordError when the file cannot be trusted."""
    path = os.path.join(log_dir, LATEST_REPORT)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError("%s: cannot be read: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise RecordError("%s: not valid JSON: %s" % (path, exc)) from None
    return DrillReport.from_dict(document, path)
