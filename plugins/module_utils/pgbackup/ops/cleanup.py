# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply a retention plan to a repository (the backup directory, or the copies at a destination):
``seawall-pgbackup cleanup [--destination NAME]`` and ``pg_backup_retention``.

The catalog is read and planned *inside* the repository lock, so no backup can appear or change
between planning and deleting. A backup is deleted manifest first, then its files: a crash in between
leaves an unlisted leftover (removed later), never a listed backup with missing files. Files of an
interrupted run (no manifest names them) are removed once older than a grace period.
A dry run takes no lock and writes nothing.

Every front end runs ``plan_cleanup`` (check mode, ``--dry-run``) or ``run_cleanup``; ``changed`` and
``diff`` say what a result means for Ansible.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..config.settings import ALL_KINDS, PHYSICAL_KINDS, Config
from ..core.clock import iso, utc_now
from ..core.duration import parse_duration
from ..core.errors import BackupError, ConfigError
from ..core.runlog import RunLog
from ..core.testpoints import pause
from ..model.manifest import Backup
from ..repo.catalog import DEFAULT_LEFTOVER_GRACE, Repository, open_repository
from ..repo.retention import WalPlan, format_plan, normalize_policy, plan_retention, plan_wal, time_zone, wal_needs
from .incremental import segment_size, wal_archive

LOCK_WAIT_SECONDS = 30


def policies_of(cfg: Config, overrides: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None) -> Dict[str, Dict[str, int]]:
    """Each kind's policy from the configuration; a kind in ``overrides`` gets that whole policy instead."""
    policies = {kind: dict(settings.retention) for kind, settings in cfg.kinds.items()}
    for kind, policy in (overrides or {}).items():
        if kind not in ALL_KINDS:
            raise ConfigError("policy.%s is not valid: use one of %s" % (kind, ", ".join(ALL_KINDS)))
        if policy is not None:
            policies[kind] = dict(policy)
    return {kind: normalize_policy(kind, policy) for kind, policy in policies.items()}


def schedules_of(cfg: Config) -> Dict[str, Optional[str]]:
    """Schedules of the enabled kinds: a disabled kind's backups stopped on purpose, so they may age out."""
    return {kind: settings.schedule if settings.enabled else None for kind, settings in cfg.kinds.items()}


def cleanup(cfg: Config, dry_run: bool = False, now: Optional[datetime] = None,
            policies: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None, tz: Optional[str] = None,
            leftover_grace: Any = None, wait_seconds: float = LOCK_WAIT_SECONDS,
            repo: Optional[Repository] = None) -> Dict[str, Any]:
    """Plan retention for ``cfg.backup_dir`` (or ``repo``, a destination's catalog) and (unless ``dry_run``)
    apply it; the result is JSON-ready.

    ``policies`` replaces the configured policy of the kinds it names; ``tz`` the configured time zone;
    ``leftover_grace`` (a duration; default: the configuration's, else 6 h) is the age after which files no
    manifest names are removed.
    """
    now = now or utc_now()
    zone = tz or cfg.timezone or "UTC"
    time_zone(zone)  # a wrong name fails before anything is read
    if leftover_grace is None:
        leftover_grace = getattr(cfg, "leftover_grace", None)  # BACKUP_LEFTOVER_GRACE / backup.cleanup.leftoverGrace
    grace = DEFAULT_LEFTOVER_GRACE if leftover_grace is None else parse_duration("leftover_grace", leftover_grace)
    effective = policies_of(cfg, policies)
    schedules = schedules_of(cfg)
    local = open_repository(cfg)  # its lock and its log, whichever repository is cleaned up
    repo = repo or local
    result: Dict[str, Any] = {
        "backup_dir": repo.root or repo.store.uri(), "dry_run": bool(dry_run), "now": iso(now), "timezone": zone,
        "policies": effective, "leftover_grace_seconds": int(grace.total_seconds()),
        "plan": [], "notes": {}, "kept": [], "to_delete": [], "deleted": [],
        "leftovers_to_remove": [], "leftovers_removed": [], "leftovers_kept": [],
        "wal": None, "wal_removed": 0,
    }
    if repo.destination:
        result["destination"] = repo.destination
    elif not os.path.isdir(repo.root or ""):
        if os.path.lexists(repo.root or ""):  # a file (or a dangling link) where the backup directory should be
            raise ConfigError("%s is not a directory" % repo.root)
        return result  # no backup directory yet: nothing to clean up
    if dry_run:
        return _run(cfg, repo, result, effective, schedules, now, zone, grace, apply=False, local=local)
    if not os.path.isdir(local.root or ""):  # a destination cleaned up from a host without its backup directory
        return _run(cfg, repo, result, effective, schedules, now, zone, grace, apply=True, local=local)
    with local.lock(wait_seconds=wait_seconds):
        return _run(cfg, repo, result, effective, schedules, now, zone, grace, apply=True, local=local)


def _wal_plan(cfg: Config, repo: Repository, backups: List[Backup],
              keep_ids: List[str]) -> Optional[Tuple[Any, WalPlan]]:
    """The WAL archive of this repository and what of it the kept backups need (None: no archive here)."""
    try:
        archive = wal_archive(cfg, repo.destination)
    except ConfigError:  # a catalog over a store the configuration does not name: no WAL archive of ours there
        return None
    segments = archive.segments()
    if not segments:
        archive.close()
        return None
    size = segment_size(segments)
    needs, hold = wal_needs(backups, keep_ids, size)
    unreadable = [where for where, _why in repo.invalid_manifests()
                  if any("/%s/" % kind in "/" + where.replace("\\", "/") for kind in PHYSICAL_KINDS)]
    if unreadable:
        hold = "a base or incremental manifest cannot be read (%s): the WAL it needs is unknown, none is deleted" \
            % unreadable[0]
    return archive, plan_wal(segments, needs, hold, size)


def _run(cfg: Config, repo: Repository, result: Dict[str, Any], policies: Mapping[str, Mapping[str, int]],
         schedules: Mapping[str, Optional[str]], now: datetime, zone: str, grace: timedelta, apply: bool,
         local: Repository) -> Dict[str, Any]:
    backups = repo.backups(include_bad=True)
    plan = plan_retention(backups, policies, now, zone, schedules, damaged=repo.damaged(backups))
    old, young = repo.leftovers_by_age(backups, now, grace)  # keys
    result.update(plan=plan.as_dicts(), notes=dict(plan.notes), kept=plan.keep, to_delete=plan.delete,
                  leftovers_to_remove=[repo.location(k) for k in old],
                  leftovers_kept=[repo.location(k) for k in young])
    wal = _wal_plan(cfg, repo, backups, plan.keep)
    if wal is not None:
        result["wal"] = wal[1].as_dict()
    try:
        return _apply(repo, result, plan, backups, old, young, wal, now, grace, local) if apply else result
    finally:
        if wal is not None:
            wal[0].close()


def _apply(repo: Repository, result: Dict[str, Any], plan: Any, backups: List[Backup], old: List[str],
           young: List[str], wal: Optional[Tuple[Any, WalPlan]], now: datetime, grace: timedelta,
           local: Repository) -> Dict[str, Any]:
    log = RunLog(local.log_dir)
    where = {"destination": repo.destination} if repo.destination else {}
    for group, note in sorted(plan.notes.items()):
        if "nothing of this kind is deleted" in note:
            log.warning("retention-held", group=group, reason=note)
    by_id: Dict[str, Backup] = {}
    for backup in backups:
        by_id.setdefault(backup.id, backup)  # the one the plan decided on
    kept_ids = set(plan.keep)
    protected = {repo.file_key(b, f) for b in backups if b.id in kept_ids for f in b.manifest.files}
    doomed = [(decision, by_id[decision.id]) for decision in plan.decisions if not decision.keep]
    unlisted: List[str] = []
    deleted: List[str] = []
    removed: List[str] = []
    result.update(deleted=deleted, leftovers_removed=removed)
    try:
        # Every manifest first, made durable, then the files: an interruption anywhere leaves unlisted
        # leftovers (removed by a later run), never a listed backup with missing files.
        for _decision, backup in doomed:
            repo.unlist(backup)
            unlisted.append(backup.id)
            if repo.destination:  # sync must not bring back what the destination's retention removed
                from .sync import forget_copy  # pylint: disable=import-outside-toplevel
                forget_copy(local, backup, repo.destination, now)
        repo.sync_unlisted([backup for _decision, backup in doomed])
        pause("cleanup-unlisted")  # crash tests: manifests gone, files still there
        for decision, backup in doomed:
            repo.remove_files(backup, protected)
            pause("cleanup-deleted")
            deleted.append(backup.id)
            log.info("deleted", id=backup.id, type=backup.kind, database=backup.database,
                     created_at=iso(backup.created_at), reasons="; ".join(decision.reasons), **where)
        for key in old:
            repo.remove_object(key)
            removed.append(repo.location(key))
            log.warning("removed-incomplete", path=repo.location(key), by="cleanup", **where)
        if wal is not None and wal[1].delete:  # after the manifests: a crash leaves WAL for the next run to prune
            archive, wal_plan = wal
            archive.remove(wal_plan.delete)
            result["wal_removed"] = len(wal_plan.delete)
            log.info("wal-removed", files=len(wal_plan.delete), ranges="; ".join(wal_plan.ranges()),
                     kept_from=wal_plan.kept_from(), **where)
        if wal is not None:  # data objects of killed pushes (no record), older than the grace period
            for path in wal[0].remove_orphans(grace, now):
                removed.append(path)
                log.warning("removed-incomplete", path=path, by="cleanup", **where)
        if not repo.destination:  # scratch directories of killed restores: ours, stale, their process gone
            for path in local.remove_stale_scratch(grace, now):
                log.warning("removed-scratch", path=path, by="cleanup")
    except BackupError as exc:
        log.failure("cleanup-failed", step=exc.step, error=str(exc), unlisted=len(unlisted), deleted=len(deleted),
                    **where)
        raise
    log.info("cleanup", kept=len(plan.keep), deleted=len(deleted), leftovers_removed=len(removed),
             leftovers_kept=len(young), **where)
    return result


def plan_cleanup(cfg: Config, policies: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None,
                 tz: Optional[str] = None, leftover_grace: Any = None,
                 now: Optional[datetime] = None, destination: Optional[str] = None) -> Dict[str, Any]:
    """The retention plan (keep or delete, with the reasons) and the leftovers to remove; changes nothing.

    ``destination``: plan for the copies at that destination instead of the backup directory."""
    return cleanup(cfg, dry_run=True, now=now, policies=policies, tz=tz, leftover_grace=leftover_grace,
                   repo=open_repository(cfg, destination))


def run_cleanup(cfg: Config, policies: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None,
                tz: Optional[str] = None, leftover_grace: Any = None, lock_wait: Any = None,
                now: Optional[datetime] = None, destination: Optional[str] = None) -> Dict[str, Any]:
    """Plan under the repository lock (waiting up to ``lock_wait``, a duration; default 30 s) and apply it."""
    wait = LOCK_WAIT_SECONDS if lock_wait is None else parse_duration("lock_wait", lock_wait).total_seconds()
    return cleanup(cfg, dry_run=False, now=now, policies=policies, tz=tz, leftover_grace=leftover_grace,
                   wait_seconds=wait, repo=open_repository(cfg, destination))


def changed(result: Mapping[str, Any]) -> bool:
    """Whether the run deleted something (a dry run: whether it would)."""
    if result["dry_run"]:
        return bool(result["to_delete"] or result["leftovers_to_remove"]
                    or (result.get("wal") or {}).get("delete"))
    return bool(result["deleted"] or result["leftovers_removed"] or result.get("wal_removed"))


def diff(result: Mapping[str, Any]) -> Dict[str, Any]:
    """The backups and leftovers before and after (the plan's view, so check mode shows the same)."""
    return {"before": {"backups": [d["id"] for d in result["plan"]], "leftovers": list(result["leftovers_to_remove"])},
            "after": {"backups": list(result["kept"]), "leftovers": []}}


def format_cleanup(result: Mapping[str, Any]) -> List[str]:
    """Text lines for ``seawall-pgbackup cleanup`` (without ``--json``): the plan table, then what was done."""
    lines = format_plan(result["plan"])
    for group, note in sorted(result.get("notes", {}).items()):
        lines.append("%s: %s" % (group, note))
    if result["dry_run"]:
        lines.append("dry run: would delete %d backups and %d leftovers; nothing was changed"
                     % (len(result["to_delete"]), len(result["leftovers_to_remove"])))
        lines.extend("would remove leftover %s" % path for path in result["leftovers_to_remove"])
    else:
        lines.append("deleted %d backups, removed %d leftovers" % (len(result["deleted"]), len(result["leftovers_removed"])))
        lines.extend("removed leftover %s" % path for path in result["leftovers_removed"])
    wal = result.get("wal")
    if wal:
        if wal.get("note"):
            lines.append("WAL archive: %d files kept: %s" % (wal["files"], wal["note"]))
        else:
            verb = "would remove" if result["dry_run"] else "removed"
            lines.append("WAL archive: %s %d of %d files, kept from %s (needed by %d kept backups)" % (
                verb, wal["delete"], wal["files"],
                ", ".join("timeline %s: %s" % item for item in sorted(wal["kept_from"].items())) or "-",
                len(wal["needed_by"])))
            lines.extend("  %s %s" % (verb, run) for run in wal["ranges"])
    lines.extend("left leftover %s (younger than %ds, or beside an unreadable manifest)"
                 % (path, result["leftover_grace_seconds"]) for path in result["leftovers_kept"])
    return lines
