# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore: choose a backup (by id, path, latest or before a time; here or at a destination) and load it.

``plan_restore`` decides, without changing anything, which backup goes where and whether it needs
restoring (idempotence on the backup id recorded on the target, ``seawall.restored_backup``);
``run_restore`` carries the plan out. Every front end calls these two, so they agree on every default.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import parse_moment, utc_now
from ..core.errors import BackupError, ConfigError, PartialRestore, RestoreError
from ..core.runlog import RunLog
from ..model.manifest import Backup
from ..pg.binaries import any_psql
from ..pg.client import database_exists, user_object_count
from ..pg.restore.archive import describe_failures
from ..pg.restorer import Restorer, RestoreResult, refuse_partial_clean, restored_backup_id
from ..repo.catalog import Repository, open_repository
from .physical import check_empty_target, restore_pgdata, restored_label
from .pitr import is_wal_link, restore_point_in_time
from .verify import DEFAULT_KIND, globals_default, server_of, source_database

# Only these restores are recorded on the target (data-only and globals restores leave no record).
RECORDED_KINDS = ("full", "schema")


def select_backup(cfg: Config, selector: str = "latest", kind: Optional[str] = None,
                  before: Optional[str] = None, repo: Optional[Repository] = None) -> Backup:
    """An id or path; or the newest good backup of ``kind`` (of DATABASE_URL's database), optionally before a time.

    ``repo``: the catalog to choose from (default the backup directory; a destination's from open_repository).
    """
    repo = repo or open_repository(cfg)
    database = source_database(cfg)
    if before is not None:
        if selector != "latest":
            raise ConfigError("a time to restore before selects among the newest backups: select 'latest', not %r"
                              % selector, hint="before-latest")
        return repo.newest_before(parse_moment(before, cfg.timezone), kind=kind or DEFAULT_KIND, database=database)
    return repo.find(selector, kind=kind, database=database if selector == "latest" else None)


def restore_target(cfg: Config, target_url: Optional[str], partial: bool) -> Optional[DbTarget]:
    """The database to restore into: ``target_url`` (DATABASE_URL's password when user and server match),
    else DATABASE_URL's database; None for a partial restore, which goes into a new database beside it."""
    if target_url:
        return server_of(cfg, target_url)
    if partial:
        return None
    return DbTarget(cfg.require_database_url())


@dataclass
class RestorePlan:
    """What a restore would do, decided without changing anything (check mode and diff show it)."""

    backup: Backup
    target: Optional[DbTarget]  # None: a new temporary database beside DATABASE_URL's (partial restore)
    exists: bool = False  # the target database exists (looked at for recorded kinds only)
    recorded: Optional[str] = None  # backup id recorded on the target by an earlier restore
    objects: int = 0  # user objects in the target
    skip_reason: Optional[str] = None  # set: the target already holds the backup, nothing runs
    refusal: Optional[str] = None  # set: the restore would be refused (the target holds objects)

    @property
    def runs(self) -> bool:
        return self.skip_reason is None

    @property
    def where(self) -> str:
        return self.target.dbname if self.target is not None and self.target.dbname else "a new temporary database"


def _maintenance_database(psql: str, target: DbTarget) -> DbTarget:
    """A database of the target's server to look at pg_database from (postgres, else template1)."""
    last: Optional[BackupError] = None
    for name in ("postgres", "template1"):
        candidate = target.for_database(name)
        try:
            database_exists(psql, candidate, name)
            return candidate
        except BackupError as exc:
            if "does not exist" not in str(exc):
                raise
            last = exc
    raise RestoreError("%s: neither database postgres nor template1 can be reached: %s" % (target.describe(), last))


def inspect_target(cfg: Config, target: DbTarget) -> Tuple[bool, Optional[str], int]:
    """(exists, recorded backup id, user objects) of the target database; read-only."""
    psql = any_psql(cfg.pg_bin_dir)
    admin = _maintenance_database(psql, target)
    if not database_exists(psql, admin, target.dbname):
        return False, None, 0
    return True, restored_backup_id(psql, target), user_object_count(psql, target)


def plan_restore(cfg: Config, selector: str = "latest", kind: Optional[str] = None, before: Optional[str] = None,
                 target_url: Optional[str] = None, tables: Sequence[str] = (), schemas: Sequence[str] = (),
                 clean: bool = False, force: bool = False) -> RestorePlan:
    """Select the backup and look at the target: skip when it already records this backup (unless ``force``),
    refuse when it holds objects and ``clean`` is not set. Reads only."""
    refuse_partial_clean(clean, tables, schemas)
    backup = select_backup(cfg, selector, kind, before)  # first: "no such backup" says more than a missing target
    target = restore_target(cfg, target_url, bool(tables or schemas))
    plan = RestorePlan(backup, target)
    if target is not None and target.dbname and backup.kind in RECORDED_KINDS:
        try:
            plan.exists, plan.recorded, plan.objects = inspect_target(cfg, target)
        finally:
            target.close()
    if plan.exists and plan.recorded == backup.id and not force:
        plan.skip_reason = "%s already holds %s (restored earlier)" % (plan.where, backup.id)
    elif plan.exists and plan.objects and not clean:
        plan.refusal = ("target database %s already holds %d user objects%s" % (
            plan.where, plan.objects, " (restored from %s)" % plan.recorded if plan.recorded else ""))
    return plan


def run_restore(cfg: Config, plan: RestorePlan, clean: bool = False, with_globals: Optional[bool] = None,
                jobs: Optional[int] = None, tables: Sequence[str] = (),
                schemas: Sequence[str] = (), keep_going: bool = False) -> Optional[RestoreResult]:
    """Carry out ``plan`` (None when it skips). ``with_globals`` unset: roles first only on another server than
    DATABASE_URL's, for backups that hold them (``verify.globals_default``); ``jobs`` unset: the configuration's.

    ``keep_going``: objects pg_restore cannot restore (a cross-version restore, say) do not stop it; the rest
    is put in place and PartialRestore raised afterwards, naming how many failed and which.
    """
    if not plan.runs:
        return None
    if plan.refusal:
        raise RestoreError("%s: restore into another database or replace it" % plan.refusal)
    return _restore_selected(cfg, plan.backup, plan.target, clean, with_globals, jobs, tables, schemas, keep_going)


def restore_backup(cfg: Config, selector: str = "latest", target_url: Optional[str] = None, clean: bool = False,
                   with_globals: Optional[bool] = None, jobs: Optional[int] = None, kind: Optional[str] = None,
                   before: Optional[str] = None, tables: Sequence[str] = (),
                   schemas: Sequence[str] = (), destination: Optional[str] = None,
                   keep_going: bool = False) -> RestoreResult:
    """Restore now, whatever the target records (the host command's restore: asked for, so always run).

    The same selection over any store; a copy at a destination is fetched to scratch and removed afterwards.
    """
    repo = open_repository(cfg, destination)
    try:
        backup = select_backup(cfg, selector, kind, before, repo=repo)
        target = restore_target(cfg, target_url, bool(tables or schemas))
        with repo.local_copy(backup) as local:
            return _restore_selected(cfg, local, target, clean, with_globals, jobs, tables, schemas, keep_going)
    finally:
        repo.close()


def plan_data_directory(cfg: Config, selector: str, pgdata: str, kind: Optional[str] = None,
                        before: Optional[str] = None) -> Dict[str, Any]:
    """What ``restore_data_directory`` would do (check mode, diff): the backup, the backup id the directory
    already holds, and ``skip_reason`` when that is this backup (idempotence). Raises like the run would for a
    directory that is neither absent nor empty. Reads only."""
    pgdata = os.path.abspath(pgdata)
    backup = select_backup(cfg, selector, kind or "base", before)
    held = restored_label(pgdata) if os.path.isdir(pgdata) else None
    if held == backup.id:
        return {"backup": backup, "pgdata": pgdata, "restored_before": held,
                "skip_reason": "%s already holds %s (restored earlier)" % (pgdata, backup.id)}
    check_empty_target(pgdata)
    return {"backup": backup, "pgdata": pgdata, "restored_before": held, "skip_reason": None}


def restore_data_directory(cfg: Config, selector: str, pgdata: str, kind: Optional[str] = None,
                           before: Optional[str] = None, destination: Optional[str] = None,
                           config_file: Optional[str] = None) -> Dict[str, Any]:
    """Rebuild a data directory from a base backup (``latest``: of kind base), here or at a destination.

    ``pgdata`` absent or empty, never overwritten; refused before anything is written (ops/physical.py).
    A WAL-method incremental (no tar) is its parents' data plus recovery to its end (ops/pitr.py; the
    restore_command reads ``config_file``)."""
    repo = open_repository(cfg, destination)
    log = RunLog(Repository(cfg.backup_dir).log_dir)
    try:
        backup = select_backup(cfg, selector, kind or "base", before, repo=repo)
        if is_wal_link(backup):
            return restore_point_in_time(cfg, backup.id, pgdata, None, destination=destination,
                                         config_file=config_file)
        chain = [backup]
        while chain[0].kind == "incremental" and chain[0].manifest.parent:  # a missing or bad link: NotFound
            if len(chain) > 10000:
                raise RestoreError("%s: its chain of parents does not end" % backup.id)
            chain.insert(0, repo.find(chain[0].manifest.parent))
        try:
            with contextlib.ExitStack() as stack:
                local = [stack.enter_context(repo.local_copy(link)) for link in chain]
                result = restore_pgdata(cfg, local, pgdata)
        except BackupError as exc:
            log.failure("restore-failed", id=backup.id, target=pgdata, step=exc.step, error=str(exc))
            raise
    finally:
        repo.close()
    log.info("restore-ok", id=backup.id, target=result["pgdata"], seconds=result["seconds"])
    return result


def _restore_selected(cfg: Config, backup: Backup, target: Optional[DbTarget], clean: bool,
                      with_globals: Optional[bool], jobs: Optional[int], tables: Sequence[str],
                      schemas: Sequence[str], keep_going: bool = False) -> RestoreResult:
    if target is None:
        # The strategy's partial recovery: a temporary database beside the source, never the source itself.
        source = DbTarget(cfg.require_database_url())
        target = source.for_database("%s_partial_%s" % (source.dbname, utc_now().strftime("%Y%m%d%H%M%S")))
    # Unset: only a backup holding the roles (full) applies them by default; a globals backup always does.
    apply_globals = globals_default(cfg, target, with_globals) and (with_globals is not None
                                                                    or backup.file("globals") is not None)
    restorer = Restorer(cfg, backup, target, clean=clean, with_globals=apply_globals, jobs=jobs, tables=tables,
                        schemas=schemas, keep_going=keep_going)
    log = RunLog(Repository(cfg.backup_dir).log_dir)
    try:
        result = restorer.run()
    except BackupError as exc:
        log.failure("restore-failed", id=backup.id, target=target.url, step=exc.step, error=str(exc))
        raise
    if result.failed_objects:  # kept going: in place, but not whole; the log lists every object
        failed = describe_failures(len(result.failed_objects), result.failed_objects)
        log.failure("restore-incomplete", id=backup.id, target=result.target, replaced=result.replaced,
                    step="restore", failed=result.failed_objects, seconds=result.seconds)
        raise PartialRestore("restored %s into %s except what pg_restore could not restore: %s"
                             % (backup.id, result.database, failed))
    log.info("restore-ok", id=backup.id, target=result.target, replaced=result.replaced,
             globals=result.globals_applied, partial=bool(tables or schemas), seconds=result.seconds,
             **({"warnings": result.warnings} if result.warnings else {}))
    return result
