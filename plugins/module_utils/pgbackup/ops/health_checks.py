# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health checks beyond connectivity and age: checksums, disk space, the last runs, the last DR drill.

Each returns ``{"check", "status", "reason", ...}`` with status ok, warning or critical; thresholds
come from ``monitoring.healthChecks`` (see monitoring.py). None of them writes anything.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from typing import Any, Dict, List, Optional

from ..codec.integrity import verify_checksums
from ..config.monitoring import HealthThresholds
from ..core.clock import FUTURE_TOLERANCE, is_future, iso, utc_now
from ..core.errors import BackupError
from ..model.drillreport import read_latest
from ..model.manifest import Backup
from ..model.record import RecordError
from ..model.runrecord import read_runs
from ..repo.catalog import Repository

RECENT_SIZES = 3  # the projection uses the mean of the newest fulls


def check(name: str, status: str, reason: str, **extra: Any) -> Dict[str, Any]:
    return dict({"check": name, "status": status, "reason": reason}, **extra)


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return "%d B" % size  # not reached


def human_age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return "%dm" % (seconds // 60)
    if seconds < 172800:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def check_checksum(backup: Optional[Backup], kind: str) -> Dict[str, Any]:
    """The newest good backup's files against its manifest (size and sha256)."""
    name = "checksum:%s" % kind
    if backup is None:
        return check(name, "critical", "no good %s backup to check" % kind)
    try:
        verify_checksums(backup)
    except BackupError as exc:
        return check(name, "critical", str(exc), newest=backup.id)
    return check(name, "ok", "%s: %d files match their sha256" % (backup.id, len(backup.manifest.files)),
                 newest=backup.id)


def check_clock_skew(repo: Repository, now: Optional[datetime] = None) -> Dict[str, Any]:
    """Backups dated ahead of this host's clock: a clock that ran ahead (here or on an earlier host).

    They are ignored as latest, for freshness and by retention; this check names them so someone fixes
    the clock (or removes them).
    """
    now = now or utc_now()
    ahead = sorted((b for b in repo.backups(include_bad=True) if is_future(b.created_at, now)),
                   key=lambda b: b.created_at, reverse=True)
    if not ahead:
        return check("clock-skew", "ok", "no backup is dated ahead of this host's clock")
    named = ", ".join("%s is %s ahead" % (b.id, human_age((b.created_at - now).total_seconds())) for b in ahead[:5])
    more = " and %d more" % (len(ahead) - 5) if len(ahead) > 5 else ""
    return check("clock-skew", "warning", "%d backup%s dated in the future (clock skew? more than %s ahead of this "
                 "host's clock): %s%s; ignored as latest, for freshness and by retention"
                 % (len(ahead), "" if len(ahead) == 1 else "s", human_age(FUTURE_TOLERANCE.total_seconds()),
                    named, more), ahead=[b.id for b in ahead])


def recent_full_size(repo: Repository, database: Optional[str]) -> Optional[float]:
    fulls = repo.backups(kind="full", database=database)[-RECENT_SIZES:]
    sizes = [b.size for b in fulls if b.size > 0]
    return sum(sizes) / len(sizes) if sizes else None


def check_disk(path: str, limits: HealthThresholds, full_size: Optional[float],
               usage: Optional[Any] = None) -> Dict[str, Any]:
    """Free space of the backup directory: percent thresholds and room for N more fulls of the recent size."""
    try:
        usage = usage or shutil.disk_usage(path)
    except OSError as exc:
        return check("disk", "critical", "cannot measure free space of %s: %s" % (path, exc.strerror or exc))
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    extra: Dict[str, Any] = {"free_bytes": usage.free, "total_bytes": usage.total, "free_percent": round(percent, 2)}
    reason = "%s free of %s (%.1f%%)" % (human_bytes(usage.free), human_bytes(usage.total), percent)
    status = "ok"
    if percent < limits.disk_critical_percent:
        status = "critical"
    elif percent < limits.disk_warning_percent:
        status = "warning"
    if full_size:
        room = int(usage.free // full_size)
        extra["room_for_fulls"] = room
        reason += "; room for %d more fulls of %s" % (room, human_bytes(full_size))
        if room < 1:
            status = "critical"
        elif room < limits.min_free_fulls and status == "ok":
            status = "warning"
    if status != "ok":
        reason += " (warning below %g%% or %d fulls, critical below %g%% or 1 full)" % (
            limits.disk_warning_percent, limits.min_free_fulls, limits.disk_critical_percent)
    return check("disk", status, reason, **extra)


def check_last_runs(log_dir: str, limits: HealthThresholds, now: Optional[datetime] = None) -> Dict[str, Any]:
    """The last run of every job (health itself aside): any failure is critical."""
    now = now or utc_now()
    records = [r for r in read_runs(log_dir) if r.command != "health"]
    if not records:
        return check("last-run", "ok", "no run recorded yet")
    failed = [r for r in records if r.status == "failed"]
    if failed:
        newest = max(failed, key=lambda r: (r.finished_at is not None, r.finished_at or r.started_at))
        return check("last-run", "critical", "last %s run failed at %s (step %s): %s"
                     % (newest.job, _iso(newest.finished_at), newest.step, newest.error),
                     failed=[r.job for r in failed])
    stale = []
    for record in records:
        started = record.started_at
        if record.status == "running" and limits.last_run_max_age_seconds \
                and (now - started).total_seconds() > limits.last_run_max_age_seconds:
            stale.append("%s running since %s" % (record.job, iso(record.started_at)))
    if stale:
        return check("last-run", "warning", "; ".join(stale) + " (killed, or hung?)")
    newest = max(records, key=lambda r: r.started_at)
    return check("last-run", "ok", "last runs ok (%d jobs; newest: %s %s at %s)"
                 % (len(records), newest.job, newest.status, iso(newest.started_at)))


def check_drill(log_dir: str, limits: HealthThresholds, now: Optional[datetime] = None) -> Dict[str, Any]:
    """The last DR drill (logs/drill-latest.json): failed is critical, older than drillMaxAge a warning."""
    now = now or utc_now()
    try:
        report = read_latest(log_dir)
    except RecordError as exc:
        return check("drill", "warning", "cannot read %s" % exc)
    if report is None:
        status = "warning" if limits.drill_required else "ok"
        return check("drill", status, "no DR drill has run yet (the drill command or pg_backup_verify drill=true)")
    finished = report.finished_at
    age = (now - finished).total_seconds() if finished else None
    extra = {"backup_id": report.backup_id, "age_seconds": int(age) if age is not None else None,
             "rto_seconds": report.rto_seconds}
    if not report.ok:
        return check("drill", "critical", "last DR drill failed at %s: %s"
                     % (_iso(report.finished_at), report.details), **extra)
    if age is None or age > limits.drill_max_age_seconds:
        return check("drill", "warning", "last DR drill passed but is %s old (limit %s)"
                     % (human_age(age or 0), human_age(limits.drill_max_age_seconds)), **extra)
    return check("drill", "ok", "last DR drill passed %s ago (RTO %.1f s)"
                 % (human_age(age), report.rto_seconds or 0), **extra)


def _iso(moment: Optional[datetime]) -> Optional[str]:
    return iso(moment) if moment else None


def check_repository(path: str) -> Dict[str, Any]:
    """The backup directory can be read and written (a read-only mount or a wrong owner stops every backup)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        return check("repository", "critical", "backup directory %s is not a directory" % path)
    if not os.path.isdir(path):
        parent = os.path.dirname(os.path.abspath(path))
        while parent and not os.path.isdir(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            return check("repository", "critical", "backup directory %s does not exist and %s is not writable"
                         % (path, parent))
        return check("repository", "ok", "backup directory %s does not exist yet (the first backup creates it)"
                     % path)
    try:
        os.listdir(path)
    except OSError as exc:
        return check("repository", "critical", "cannot read backup directory %s: %s" % (path, exc.strerror or exc))
    if not os.access(path, os.W_OK | os.X_OK):
        return check("repository", "critical", "backup directory %s is not writable%s"
                     % (path, " (a read-only file system)" if _read_only_mount(path) else ""))
    return check("repository", "ok", "backup directory %s is readable and writable" % path)


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_catalog(repo: Repository) -> Dict[str, Any]:
    """Every manifest parses: one that does not is never acted on, so its backup is neither kept nor restorable."""
    try:
        invalid = repo.invalid_manifests()
    except BackupError as exc:
        return check("catalog", "critical", "cannot read the catalog: %s" % exc)
    if invalid:
        return check("catalog", "critical", "%d manifest%s not trusted and skipped: %s"
                     % (len(invalid), "" if len(invalid) == 1 else "s",
                        "; ".join("%s: %s" % (where, why) for where, why in invalid)),
                     invalid=[where for where, _why in invalid])
    return check("catalog", "ok", "every manifest parses")


def _key_ids(backup: Backup) -> List[str]:
    """Every key id the local backup needs to be read and trusted: its files' keys and its manifest's MAC key."""
    found = []
    manifest = backup.manifest
    for record in [manifest.encryption] + [manifest.encryption_of(e) for e in manifest.files]:
        if record is not None:
            found.extend(record.key_ids or [record.key_id])
    if manifest.auth is not None and manifest.auth.algorithm == "hmac-sha256":
        found.append(manifest.auth.key_id)
    return sorted({k for k in found if k})


def check_keys(repo: Repository, retired: List[str], write_ids: List[str]) -> Dict[str, Any]:
    """Retired keys still needed: by a local backup, by a copy at a destination (as recorded when it was
    copied), or as the key new backups are written with. Only then may a retired key file go."""
    if not retired:
        return check("keys", "ok", "no key is listed as retired")
    try:
        backups = repo.backups(include_bad=True)
    except BackupError as exc:
        return check("keys", "critical", "cannot read the catalog: %s" % exc)
    local: Dict[str, int] = {}
    copies: Dict[str, int] = {}
    unknown = 0
    for backup in backups:
        for key_id in _key_ids(backup):
            if key_id in retired:
                local[key_id] = local.get(key_id, 0) + 1
        encryption = backup.manifest.encryption
        for copy in backup.manifest.copies:
            if copy.removed_at is not None:
                continue
            if copy.key_id in retired:
                copies[copy.key_id] = copies.get(copy.key_id, 0) + 1
            elif encryption is not None and copy.key_id != encryption.key_id:
                unknown += 1  # rewritten here since it was copied (or copied before copies named their key)
    problems = []
    writing = sorted(set(write_ids) & set(retired))
    if writing:
        problems.append("retired key id %s is still the key new backups are encrypted with (add a new key "
                        "first)" % ", ".join(writing))
    problems.extend("%d local backup%s depend%s on retired key id %s" % (
        n, "" if n == 1 else "s", "s" if n == 1 else "", k) for k, n in sorted(local.items()))
    problems.extend("%d cop%s at destinations depend%s on retired key id %s" % (
        n, "y" if n == 1 else "ies", "s" if n == 1 else "", k) for k, n in sorted(copies.items()))
    if unknown:
        problems.append("%d cop%s at destinations %s not under the local backup's key" % (
            unknown, "y" if unknown == 1 else "ies", "is" if unknown == 1 else "are"))
    extra = {"retired": sorted(retired), "local": local, "copies": copies, "stale_copies": unknown}
    if problems:
        return check("keys", "warning", "; ".join(problems) + ": re-encrypt them (rekey, which reaches the copies "
                     "too) before the retired key file is removed", **extra)
    return check("keys", "ok", "no backup or copy depends on retired key id %s" % ", ".join(sorted(retired)),
                 **extra)


WAL_WARNING_AGE_SECONDS = 2 * 3600     # the hourly job switches segments: two hours without one is late
WAL_CRITICAL_AGE_SECONDS = 26 * 3600   # a day and more: point-in-time recovery has lost a day


def check_wal(status: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The WAL archive (ops/wal.wal_status): gaps are critical, an old newest segment or an untrusted record a
    warning. None when this host does not archive (no ``wal/`` folder, nothing archived)."""
    if not status or not (status.get("exists") or status.get("configured")):
        return None
    if not status.get("exists"):
        return check("wal", "warning", "nothing archived in %s yet: check archive_command (the server log) and that "
                     "the server writes WAL" % status.get("where"), newest=None, newest_age_seconds=None, gaps=[],
                     segments=0)
    extra = {"newest": (status.get("newest") or {}).get("wal"), "newest_age_seconds": status.get("newest_age_seconds"),
             "gaps": list(status.get("gaps") or []), "segments": status.get("segments")}
    gaps = extra["gaps"]
    if gaps:
        named = ", ".join(gaps[:3]) + (" ..." if len(gaps) > 3 else "")
        reason = "%d WAL file%s missing from the archive after %s: %s; point-in-time recovery stops there (take a " \
                 "new base backup)" % (len(gaps), "" if len(gaps) == 1 else "s", status.get("reached_lsn"), named)
        return check("wal", "critical", reason, **extra)
    age = status.get("newest_age_seconds")
    if age is None:
        return check("wal", "warning", "no WAL segment archived in %s yet (only history or backup files)"
                     % status.get("where"), **extra)
    described = "newest WAL %s archived %s ago, %d segments" % (extra["newest"], human_age(age), extra["segments"] or 0)
    if (status.get("newest") or {}).get("future"):
        return check("wal", "warning", "%s is dated in the future (%s): check this host's clock"
                     % (extra["newest"], status["newest"]["modified_at"]), **extra)
    if age > WAL_CRITICAL_AGE_SECONDS:
        return check("wal", "critical", "%s: archiving has stopped (check archive_command in the server log)"
                     % described, **extra)
    if status.get("refused"):
        first = status["refused"][0]
        return check("wal", "warning", "%s; %d record%s not trusted: %s %s" % (
            described, len(status["refused"]), "" if len(status["refused"]) == 1 else "s", first["record"],
            first["reason"]), **extra)
    if age > WAL_WARNING_AGE_SECONDS:
        return check("wal", "warning", "%s: archiving is late (an idle server, or archive_command failing)"
                     % described, **extra)
    return check("wal", "ok", "%s, contiguous from %s" % (described, status.get("from_lsn")), **extra)


def worst(checks: List[Dict[str, Any]]) -> str:
    order = ("ok", "warning", "critical")
    return max((c["status"] for c in checks), key=order.index, default="ok")
