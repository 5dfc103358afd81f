# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health: can we reach the database, and is the newest good backup of each scheduled kind fresh?

Statuses follow the Nagios convention (0 ok, 1 warning, 2 critical) so existing monitoring
can run the command as it is.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional

from .binaries import any_psql
from .catalog import Repository, utc_now
from .config import LOGICAL_KINDS, Config
from .connection import DbTarget
from .cron import Cron
from .errors import BackupError

STATUS_CODE = {"ok": 0, "warning": 1, "critical": 2}
WARNING_SLACK = timedelta(minutes=30)   # a run may start late (RandomizedDelaySec, a long previous run)
CRITICAL_SLACK = timedelta(hours=2)     # a daily full older than 26 h is critical


def _check(name: str, status: str, reason: str, **extra: Any) -> Dict[str, Any]:
    return dict({"check": name, "status": status, "reason": reason}, **extra)


def check_connectivity(cfg: Config) -> Dict[str, Any]:
    from .pgclient import server_info  # pylint: disable=import-outside-toplevel

    if not cfg.database_url:
        return _check("connectivity", "critical", "DATABASE_URL is not set")
    target = DbTarget(cfg.database_url)
    started = time.monotonic()
    try:
        info = server_info(any_psql(cfg.pg_bin_dir), target)
    except BackupError as exc:
        return _check("connectivity", "critical", str(exc))
    finally:
        target.close()
    return _check("connectivity", "ok", "connected to PostgreSQL %s as %s" % (info.version, info.current_user),
                  seconds=round(time.monotonic() - started, 3))


def check_backup_age(cfg: Config, kind: str, now: Optional[datetime] = None) -> Dict[str, Any]:
    now = now or utc_now()
    schedule = cfg.kinds[kind].schedule
    database = DbTarget(cfg.database_url).dbname if cfg.database_url else None
    backups = Repository(cfg.backup_dir).backups(kind=kind, database=database)
    interval = Cron(schedule).longest_gap() if schedule else None
    if not backups:
        return _check("age:%s" % kind, "critical", "no good %s backup in %s" % (kind, cfg.backup_dir))
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


def health(cfg: Config, now: Optional[datetime] = None) -> Dict[str, Any]:
    checks: List[Dict[str, Any]] = [check_connectivity(cfg)]
    for kind in LOGICAL_KINDS:
        settings = cfg.kinds[kind]
        if settings.enabled and settings.schedule:
            checks.append(check_backup_age(cfg, kind, now))
    worst = max((STATUS_CODE[c["status"]] for c in checks), default=0)
    status = [k for k, v in STATUS_CODE.items() if v == worst][0]
    return {"status": status, "exit_code": worst, "checks": checks}
