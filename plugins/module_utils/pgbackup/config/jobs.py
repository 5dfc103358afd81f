# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled jobs: one table for every scheduler (systemd timers, cron, Windows tasks, ``schedule``).

A job is a name, a cron expression, whether it is scheduled, the ``seawall-pgbackup`` arguments it runs and
whether it takes the repository lock (those run one after another: the timers queue them with flock, the
foreground scheduler with its own queue). ``job_table`` computes it from the roles' inputs (the
``schedule_jobs`` filter is a thin wrapper over it); ``config_jobs`` from a loaded ``Config`` (the
foreground scheduler). Both apply the same rules, so the two kinds of scheduler never disagree.

There is no drill job: no setting schedules a DR drill (run ``drill`` from a job of your own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..core.cron import Cron
from ..core.errors import BackupError, ConfigError
from .settings import Config, parse_bool

KINDS = ("full", "base", "incremental", "schema", "data", "globals")
JOBS = KINDS + ("cleanup", "verify", "health")
DEFAULT_VERIFY_ARGUMENTS = ("latest", "--level", "archive")
DESCRIPTIONS = {
    "full": "full backup (pg_dump custom format + globals)",
    "base": "physical base backup (pg_basebackup)",
    "incremental": "incremental backup",
    "schema": "schema-only backup",
    "data": "data-only backup",
    "globals": "globals backup (roles, tablespaces)",
    "cleanup": "retention cleanup",
    "verify": "backup verification",
    "health": "health check (connectivity, backup age)",
}


@dataclass
class Job:
    name: str
    enabled: bool
    schedule: str
    kind: str
    arguments: List[str] = field(default_factory=list)
    locks: bool = True
    description: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "enabled": self.enabled, "schedule": self.schedule, "kind": self.kind,
                "arguments": list(self.arguments), "locks": self.locks, "description": self.description}


def arguments_of(job: str, verify_arguments: Sequence[str] = DEFAULT_VERIFY_ARGUMENTS) -> List[str]:
    if job in KINDS:
        return ["create", "--type", job]
    if job == "verify":
        return ["verify"] + list(verify_arguments)
    return [job]


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("%s must be a dictionary, got %s" % (name, type(value).__name__))
    return value


def _expression(job: str, value: Any, where: str) -> str:
    if value is None or value is False:
        return ""
    if not isinstance(value, str):
        raise ConfigError("the schedule of job %s (%s) must be a cron string such as '0 2 * * *', got %r"
                          % (job, where, value))
    text = " ".join(value.split())
    if not text:
        return ""
    try:
        Cron(text)
    except BackupError as exc:
        raise ConfigError("job %s (%s): %s" % (job, where, exc)) from None
    return text


def job_table(schedules: Any, config: Any = None, incremental: Any = False,
              verify_arguments: Optional[Sequence[str]] = None, base: Any = False) -> List[Job]:
    """Every known job from role inputs: ``schedules`` (job -> cron) and the users' document, whose
    ``backup.types.<kind>``, ``backup.cleanup.schedule`` and ``monitoring.healthChecks.enabled`` win."""
    schedules = _mapping(schedules, "the input")
    unknown = sorted(set(schedules) - set(JOBS))
    if unknown:
        raise ConfigError("unknown job(s) %s; known: %s" % (", ".join(unknown), ", ".join(JOBS)))
    backup = _mapping(_mapping(config, "config").get("backup"), "config.backup")
    types = _mapping(backup.get("types"), "config.backup.types")
    if verify_arguments is None:
        verify_arguments = list(DEFAULT_VERIFY_ARGUMENTS)
    if isinstance(verify_arguments, (str, bytes)) or not isinstance(verify_arguments, Sequence) \
            or not all(isinstance(a, str) for a in verify_arguments):
        raise ConfigError("verify_arguments must be a list of strings")
    jobs = []
    for job in JOBS:
        schedule = _expression(job, schedules.get(job), "pgbackup_schedule_%s" % job)
        enabled = True
        kind = ""
        if job in KINDS:
            kind = job
            own = _mapping(types.get(job), "config.backup.types.%s" % job)
            if own.get("schedule") not in (None, ""):
                schedule = _expression(job, own["schedule"], "config backup.types.%s.schedule" % job)
            if "enabled" in own:
                enabled = parse_bool("config backup.types.%s.enabled" % job, own["enabled"])
            if job == "incremental" and not parse_bool("incremental", incremental):
                enabled = False
            if job == "base" and not parse_bool("base", base):
                enabled = False
        elif job == "cleanup":
            cleanup = _mapping(backup.get("cleanup"), "config.backup.cleanup")
            if cleanup.get("schedule") not in (None, ""):
                schedule = _expression(job, cleanup["schedule"], "config backup.cleanup.schedule")
        elif job == "health":
            monitoring = _mapping(backup.get("monitoring"), "config.backup.monitoring")
            checks = _mapping(monitoring.get("healthChecks"), "config.backup.monitoring.healthChecks")
            if "enabled" in checks:
                enabled = parse_bool("config backup.monitoring.healthChecks.enabled", checks["enabled"])
        jobs.append(Job(job, bool(enabled and schedule), schedule, kind, arguments_of(job, verify_arguments),
                        job != "health", DESCRIPTIONS[job]))
    return jobs


def config_jobs(cfg: Config, archiving: bool = False,
                verify_arguments: Sequence[str] = DEFAULT_VERIFY_ARGUMENTS) -> List[Job]:
    """Every known job from a loaded configuration (defaults < JSON < environment, as every setting).

    ``incremental`` and ``base`` run only where WAL is archived (``archiving``: the repository has its WAL
    archive), as the roles schedule them only on hosts that archive WAL: without a base backup and the
    WAL since it an incremental cannot be taken.
    """
    health_on = parse_bool("monitoring.healthChecks.enabled",
                           _mapping(cfg.monitoring.get("healthChecks"), "monitoring.healthChecks").get("enabled", True))
    jobs = []
    for job in JOBS:
        kind = job if job in KINDS else ""
        if kind:
            settings = cfg.kinds[kind]
            schedule, enabled = settings.schedule or "", settings.enabled
            if kind in ("incremental", "base") and not archiving:
                enabled = False
        elif job == "cleanup":
            schedule, enabled = cfg.cleanup_schedule or "", True
        elif job == "verify":
            schedule, enabled = cfg.verify_schedule or "", True
        else:
            schedule, enabled = cfg.health_schedule or "", health_on
        schedule = " ".join(schedule.split())
        jobs.append(Job(job, bool(enabled and schedule), schedule, kind, arguments_of(job, verify_arguments),
                        job != "health", DESCRIPTIONS[job]))
    return jobs
