# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health: can we reach the database, and is the newest good backup of each scheduled kind fresh?

Plus (health_checks.py) the newest backup's checksums, free disk space with a projection, the last
runs' outcome and the last DR drill, with thresholds from ``monitoring.healthChecks``. Statuses
follow the Nagios convention (0 ok, 1 warning, 2 critical) so existing monitoring can run the
command as it is.

Health has no separate plan: the checks only read. Front ends run ``health`` through the run hook
(ops/perform.perform), except in check mode; ``failure`` decides when a caller fails (``fail_on``).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..config.connection import DbTarget
from ..config.monitoring import MonitoringSettings, load_monitoring
from ..config.settings import LOGICAL_KINDS, Config
from ..core.clock import utc_now
from ..core.errors import BackupError, ConfigError
from ..pg.binaries import any_psql
from ..repo.catalog import Repository, open_repository, present
from ..repo.retention import schedule_interval
from .health_checks import (check_catalog, check_checksum, check_clock_skew, check_disk, check_drill, check_keys,
                            check_last_runs, check_repository, check_wal, recent_full_size, worst)
from .wal import wal_status

STATUS_CODE = {"ok": 0, "warning": 1, "critical": 2}
FAIL_ON = {"critical": 2, "warning": 1, "never": 3}  # the status code from which a caller fails (pg_backup_health)
WARNING_SLACK = timedelta(minutes=30)   # a run may start late (RandomizedDelaySec, a long previous run)
CRITICAL_SLACK = timedelta(hours=2)     # a daily full older than 26 h is critical


def _check(name: str, status: str, reason: str, **extra: Any) -> Dict[str, Any]:
    return dict({"check": name, "status": status, "reason": reason}, **extra)


def check_connectivity(cfg: Config, timeout: float = 10) -> Dict[str, Any]:
    from ..pg.client import query  # pylint: disable=import-outside-toplevel

    if not cfg.database_url:
        return _check("connectivity", "critical", "DATABASE_URL is not set")
    target = DbTarget(cfg.database_url)
    started = time.monotonic()
    try:
        # psql is killed after ``timeout`` seconds whatever it waits for (DNS, TCP, a locked catalog)
        row = query(any_psql(cfg.pg_bin_dir), target, "SELECT current_setting('server_version'), current_user",
                    timeout=timeout)[0]
    except BackupError as exc:
        return _check("connectivity", "critical", str(exc))
    finally:
        target.close()
    return _check("connectivity", "ok", "connected to PostgreSQL %s as %s" % (row[0], row[1]),
                  seconds=round(time.monotonic() - started, 3))


def check_backup_age(cfg: Config, kind: str, now: Optional[datetime] = None) -> Dict[str, Any]:
    now = now or utc_now()
    schedule = cfg.kinds[kind].schedule
    database = DbTarget(cfg.database_url).dbname if cfg.database_url else None
    found = open_repository(cfg).backups(kind=kind, database=database)
    backups = present(found, now)  # one dated in the future is never fresh (clock-skew warns of it)
    interval = schedule_interval(schedule) if schedule else None
    if not backups:
        ahead = len(found) - len(backups)
        return _check("age:%s" % kind, "critical", "no good %s backup in %s%s" % (
            kind, cfg.backup_dir, " (%d dated in the future do not count)" % ahead if ahead else ""))
    newest = backups[-1]
    age = now - newest.created_at
    extra = {"newest": newest.id, "age_seconds": int(age.total_seconds())}
    if interval is None:
        return _check("age:%s" % kind, "ok", "newest %s is %s old (on demand)" % (newest.id, _human(age)), **extra)
    if age > interval + CRITICAL_SLACK:
        status = "critical"
    elif age > interval + WARNING_SLACK:
        status = "warning"
    else:
        status = "ok"
    return _check("age:%s" % kind, status, "newest %s is %s old; schedule '%s' runs every %s"
                  % (newest.id, _human(age), schedule, _human(interval)), **extra)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 3600:
        return "%dm" % (seconds // 60)
    if seconds < 172800:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def health(cfg: Config, now: Optional[datetime] = None, settings: Optional[MonitoringSettings] = None,
           env: Optional[Mapping[str, str]] = None, connect: bool = True,
           checksums: Optional[bool] = None) -> Dict[str, Any]:
    """Every check; ``connect=False`` leaves the database out, ``checksums=False`` the sha256 (``serve``'s /healthz)."""
    settings = settings or load_monitoring(cfg.monitoring, os.environ if env is None else env)
    limits = settings.health
    database = DbTarget(cfg.database_url).dbname if cfg.database_url else None
    checks: List[Dict[str, Any]] = [check_connectivity(cfg, limits.connect_timeout)] if connect else []
    try:
        repo = open_repository(cfg)
    except ConfigError as exc:  # the keys that check the manifests' signatures are missing or unsafe: none is read
        checks.append(_check("trust", "critical", str(exc)))
        return {"status": "critical", "exit_code": STATUS_CODE["critical"], "checks": checks}
    relaxed = [name for name, on in (("BACKUP_ACCEPT_UNSIGNED", cfg.accept_unsigned),
                                     ("BACKUP_ACCEPT_UNENCRYPTED", cfg.accept_unencrypted)) if on]
    if relaxed and repo.trust.active:  # meant for one migration run, not for every day
        checks.append(_check("trust", "warning", "%s is on: backups whose manifests are not signed, or that are not "
                             "encrypted as configured, are trusted; re-encrypt them (rekey) and turn it off"
                             % " and ".join(relaxed)))
    repository, safe = _repository_checks(cfg.backup_dir, repo)
    checks.extend(repository)
    if not safe:  # another user's or a world-writable directory: nothing in it is read
        return {"status": "critical", "exit_code": STATUS_CODE["critical"], "checks": checks}
    for kind in LOGICAL_KINDS:
        kind_settings = cfg.kinds[kind]
        if kind_settings.enabled and kind_settings.schedule:
            checks.append(check_backup_age(cfg, kind, now))
            if limits.checksum if checksums is None else checksums:
                newest = present(repo.backups(kind=kind, database=database), now)
                checks.append(check_checksum(newest[-1] if newest else None, kind))
    checks.append(check_clock_skew(repo, now))
    wal = _wal_check(cfg, now)
    if wal is not None:
        checks.append(wal)
    if cfg.encryption_retired_keys or repo.trust.active:  # keys in use: which of them are retired
        checks.append(check_keys(repo, list(cfg.encryption_retired_keys or []), _write_key_ids(repo)))
    checks.append(check_disk(cfg.backup_dir if os.path.isdir(cfg.backup_dir) else os.path.dirname(
        os.path.abspath(cfg.backup_dir)), limits, recent_full_size(repo, database)))
    checks.append(check_last_runs(repo.log_dir, limits, now))
    checks.append(check_drill(repo.log_dir, limits, now))
    status = worst(checks)
    return {"status": status, "exit_code": STATUS_CODE[status], "checks": checks}


def _wal_check(cfg: Config, now: Optional[datetime]) -> Optional[Dict[str, Any]]:
    """The ``wal`` check, when this repository archives WAL (docs/wal.md)."""
    try:
        return check_wal(wal_status(cfg, now=now))
    except BackupError as exc:
        return _check("wal", "critical", "the WAL archive cannot be read: %s" % exc)


def _write_key_ids(repo: Repository) -> List[str]:
    """The key ids new backups are encrypted with (and their manifests signed with), as configured."""
    sealing = repo.trust.sealing  # what new files are encrypted with (None: nothing is, or no key here)
    return list(sealing.key_ids or [sealing.key_id]) if sealing is not None else []


def _repository_checks(backup_dir: str, repo: Repository) -> Tuple[List[Dict[str, Any]], bool]:
    """(checks, safe): the backup directory is usable and safe to read, and every manifest in it parses."""
    usable = check_repository(backup_dir)
    if usable["status"] == "ok":
        try:
            repo.objects()  # another user's or a world-writable directory, a symlinked folder (issue #11)
        except BackupError as exc:
            return [_check("repository", "critical", str(exc))], False
    return [usable, check_catalog(repo)], True


def failure(report: Mapping[str, Any], fail_on: str = "critical") -> Optional[str]:
    """The one-line failure of ``report`` when its status reaches ``fail_on``; None when it does not."""
    if STATUS_CODE[report["status"]] < FAIL_ON[fail_on]:
        return None
    bad = [c for c in report["checks"] if c["status"] != "ok"]
    return "health is %s: %s" % (report["status"].upper(), "; ".join(
        "%s %s: %s" % (c["check"], c["status"], c["reason"]) for c in bad))
