# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus metrics in the text exposition format, rebuilt from the catalog, the run records and the drill report.

Rebuilt whole on every run (never patched), so the file is complete even when a run record is gone.
Written for node_exporter's textfile collector atomically (a temp file in the same directory, then
rename); ``serve`` renders the same text per scrape.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..config.settings import LOGICAL_KINDS, Config
from ..core.clock import parse_iso
from ..core.errors import BackupError
from ..core.fsutil import write_file_atomic
from ..model.drillreport import DrillReport, read_latest
from ..model.record import RecordError
from ..model.runrecord import read_runs
from ..repo.catalog import Repository, open_repository, present
from ..repo.retention import schedule_interval
from ..repo.walarchive import FOLDER, archive_status

TEXTFILE_NAME = "seawall_pgbackup.prom"
SCHEDULE_STATE = "schedule-state.json"  # written by ops/scheduler.py (the ``schedule`` command)
PREFIX = "seawall_backup_"
RUN_STATUS = {"ok": 1, "warning": 1, "failed": 0, "critical": 0}

# name -> (type, help); the order is the order in the file.
METRICS: Dict[str, Tuple[str, str]] = {
    "last_success_timestamp_seconds": ("gauge", "Finish time of the newest good backup (Unix seconds)."),
    "last_size_bytes": ("gauge", "Size of the newest good backup's files."),
    "last_duration_seconds": ("gauge", "How long the newest good backup took."),
    "good_backups": ("gauge", "Good (complete, not marked bad) backups in the catalog."),
    "schedule_interval_seconds": ("gauge", "Longest gap between two scheduled runs of the kind."),
    "verification_success": ("gauge", "1 when the newest verified backup of the kind passed, 0 when it failed."),
    "verification_timestamp_seconds": ("gauge", "When a backup of the kind was last verified (Unix seconds)."),
    "last_run_success": ("gauge", "1 when the last run of the job succeeded, 0 when it failed."),
    "last_run_running": ("gauge", "1 while the last run of the job has started and not finished."),
    "last_run_timestamp_seconds": ("gauge", "Start time of the last run of the job (Unix seconds)."),
    "last_run_duration_seconds": ("gauge", "Duration of the last finished run of the job."),
    "health_status": ("gauge", "Result of the last health run: 0 ok, 1 warning, 2 critical."),
    "drill_success": ("gauge", "1 when the last DR drill passed, 0 when it failed."),
    "drill_timestamp_seconds": ("gauge", "When the last DR drill finished (Unix seconds)."),
    "drill_rto_seconds": ("gauge", "Restore time measured by the last DR drill."),
    "disk_free_bytes": ("gauge", "Free space of the file system holding the backup directory."),
    "disk_total_bytes": ("gauge", "Size of the file system holding the backup directory."),
    "repository_size_bytes": ("gauge", "Bytes of all good backups in the catalog."),
    "wal_segments": ("gauge", "WAL segments in the archive (trusted records)."),
    "wal_archive_size_bytes": ("gauge", "Bytes the WAL archive stores."),
    "wal_gaps": ("gauge", "WAL files missing from the archive before its newest segment (0: contiguous)."),
    "wal_last_archived_timestamp_seconds": ("gauge", "Last write of the newest archived WAL segment (Unix seconds): "
                                                     "the recovery point objective is now minus this."),
    "wal_newest_segment_age_seconds": ("gauge", "Age of the newest archived WAL segment when the metrics were made."),
    "wal_refused_records": ("gauge", "WAL records in the archive that are not trusted (planted or edited)."),
    "schedule_skipped_total": ("counter", "Runs of the job that `schedule` skipped: the previous run was still going."),
    "schedule_heartbeat_timestamp_seconds": ("gauge", "When the `schedule` loop last wrote its state (Unix seconds)."),
    "metrics_generated_timestamp_seconds": ("gauge", "When this metrics text was generated (Unix seconds)."),
}


def metric_names() -> List[str]:
    return [PREFIX + name for name in METRICS]


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _seconds(moment: Optional[datetime]) -> Optional[float]:
    return round(moment.timestamp(), 3) if moment else None


def collect(cfg: Config, now: Optional[float] = None) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    """Every sample, by metric name (without the prefix)."""
    samples: Dict[str, List[Tuple[Dict[str, str], float]]] = {name: [] for name in METRICS}
    host = socket.gethostname()
    repo = open_repository(cfg)

    def add(name: str, labels: Dict[str, Any], value: Optional[float]) -> None:
        if value is not None:
            samples[name].append((dict({"host": host}, **{k: str(v) for k, v in labels.items()}), float(value)))

    everything = repo.backups(include_bad=True)
    groups: Dict[Tuple[str, str], List[Any]] = {}
    for backup in everything:
        groups.setdefault((backup.kind, backup.database), []).append(backup)
    total = 0
    for (kind, database), backups in sorted(groups.items()):
        labels = {"kind": kind, "database": database}
        good = [b for b in backups if b.good]
        total += sum(b.size for b in good)
        add("good_backups", labels, len(good))
        current = present(good)  # a backup dated in the future would look fresh for ever
        if current:
            newest = current[-1]
            add("last_success_timestamp_seconds", labels,
                _seconds(newest.manifest.finished_at) or newest.created_at.timestamp())
            add("last_size_bytes", labels, newest.size)
            add("last_duration_seconds", labels, newest.manifest.duration_seconds)
        checked = [(b.manifest.verification, b.id) for b in backups if b.manifest.verification]
        if checked:
            latest = max(checked, key=lambda pair: (pair[0].at, pair[1]))[0]
            add("verification_success", labels, 1 if latest.ok else 0)
            add("verification_timestamp_seconds", labels, _seconds(latest.at))
    for kind in LOGICAL_KINDS:
        settings = cfg.kinds[kind]
        if settings.enabled and settings.schedule:
            add("schedule_interval_seconds", {"kind": kind}, schedule_interval(settings.schedule).total_seconds())
    for record in read_runs(repo.log_dir):
        labels = {"job": record.job, "kind": record.kind or "", "database": record.database or ""}
        running = record.status == "running"
        add("last_run_running", labels, 1 if running else 0)
        add("last_run_timestamp_seconds", labels, _seconds(record.started_at))
        if not running:
            add("last_run_success", labels, RUN_STATUS.get(record.status, 0))
            add("last_run_duration_seconds", labels, record.duration_seconds)
        if record.command == "health" and record.exit_code in (0, 1, 2):
            add("health_status", {}, record.exit_code)
    drill = _drill_report(repo.log_dir)
    if drill:
        labels = {"database": drill.database or ""}
        add("drill_success", labels, 1 if drill.ok else 0)
        add("drill_timestamp_seconds", labels, _seconds(drill.finished_at))
        add("drill_rto_seconds", labels, drill.rto_seconds)
    try:
        usage = shutil.disk_usage(repo.root if os.path.isdir(repo.root) else os.path.dirname(repo.root))
        add("disk_free_bytes", {}, usage.free)
        add("disk_total_bytes", {}, usage.total)
    except OSError:
        pass
    add("repository_size_bytes", {}, total)
    _wal_samples(cfg, add)
    _schedule_samples(repo.log_dir, add)
    add("metrics_generated_timestamp_seconds", {}, round(time.time() if now is None else now, 3))
    return samples


def _wal_samples(cfg: Config, add) -> None:
    """The WAL archive's figures, when this repository archives WAL (best effort: metrics never fail a run)."""
    if not os.path.isdir(os.path.join(cfg.backup_dir, FOLDER)):
        return
    try:
        status = archive_status(cfg)
    except BackupError:
        return
    if not (status["exists"] or status["configured"]):
        return
    add("wal_segments", {}, status["segments"])
    add("wal_archive_size_bytes", {}, status["bytes"])
    add("wal_gaps", {}, len(status["gaps"]))
    add("wal_refused_records", {}, len(status["refused"]))
    if status["newest"]:
        add("wal_last_archived_timestamp_seconds", {}, _seconds(parse_iso(status["newest"]["modified_at"])))
        add("wal_newest_segment_age_seconds", {}, status["newest_age_seconds"])


def _schedule_samples(log_dir: str, add) -> None:
    """The foreground scheduler's state (ops/scheduler.py writes it): skip counters and its heartbeat."""
    try:
        with open(os.path.join(log_dir, SCHEDULE_STATE), encoding="utf-8") as handle:
            state = json.load(handle)
        skipped = state.get("skipped") or {}
        heartbeat = parse_iso(state["heartbeat"]) if state.get("heartbeat") else None
        for job, count in sorted(skipped.items()):
            add("schedule_skipped_total", {"job": job}, int(count))
    except (OSError, ValueError, TypeError, AttributeError, OverflowError, BackupError):
        return  # no scheduler here, or a state file being replaced: nothing to say
    add("schedule_heartbeat_timestamp_seconds", {}, _seconds(heartbeat))


def _drill_report(log_dir: str) -> Optional[DrillReport]:
    try:
        return read_latest(log_dir)
    except RecordError:
        return None


def render(samples: Dict[str, List[Tuple[Dict[str, str], float]]]) -> str:
    lines: List[str] = []
    for name, (kind, text) in METRICS.items():
        full = PREFIX + name
        lines.append("# HELP %s %s" % (full, text))
        lines.append("# TYPE %s %s" % (full, kind))
        for labels, value in samples.get(name, []):
            rendered = ",".join('%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items()))
            lines.append("%s{%s} %s" % (full, rendered, _number(value)))
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def metrics_text(cfg: Config) -> str:
    return render(collect(cfg))


def write_textfile(directory: str, text: str, name: str = TEXTFILE_NAME, mode: int = 0o644) -> str:
    """Write ``text`` to ``directory/name`` atomically (0644 for a collector directory: node_exporter runs as
    another user; the private copy in logs/ is 0600 like every other file of the repository)."""
    path = os.path.join(directory, name)
    write_file_atomic(path, text.encode("utf-8"), mode, what="metrics", step="metrics")
    return path


def textfile_targets(cfg: Config, textfile_dir: Optional[str]) -> Iterable[Tuple[str, int]]:
    """(directory, mode): the configured collector directory (0644), else the repository's logs/ (0600)."""
    if textfile_dir:
        return [(textfile_dir, 0o644)]
    return [(Repository(cfg.backup_dir).log_dir, 0o600)]
