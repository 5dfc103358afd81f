# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore: choose a backup (by id, path, latest or before a time; here or at a destination) and load it."""

from __future__ import annotations

import shutil
from typing import Optional, Sequence

from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import parse_moment, utc_now
from ..core.errors import BackupError, ConfigError
from ..core.runlog import RunLog
from ..model.manifest import Backup
from ..pg.restorer import Restorer, RestoreResult
from ..repo.catalog import Repository


def select_backup(cfg: Config, selector: str = "latest", kind: Optional[str] = None,
                  before: Optional[str] = None) -> Backup:
    """An id or path; or the newest good backup of ``kind`` (of DATABASE_URL's database), optionally before a time."""
    repo = Repository(cfg.backup_dir)
    database = DbTarget(cfg.database_url).dbname if cfg.database_url else None
    if before is not None:
        if selector != "latest":
            raise ConfigError("a time to restore before selects among the newest backups: select 'latest', not %r"
                              % selector, hint="before-latest")
        return repo.newest_before(parse_moment(before, cfg.timezone), kind=kind or "full", database=database)
    return repo.find(selector, kind=kind, database=database if selector == "latest" else None)


def restore_backup(cfg: Config, selector: str = "latest", target_url: Optional[str] = None, clean: bool = False,
                   with_globals: bool = False, jobs: Optional[int] = None, kind: Optional[str] = None,
                   before: Optional[str] = None, tables: Sequence[str] = (),
                   schemas: Sequence[str] = (), destination: Optional[str] = None) -> RestoreResult:
    if destination:  # a copy at a destination: downloaded into a scratch directory, removed afterwards
        from ..ops.remote import fetch_for_restore  # pylint: disable=import-outside-toplevel
        database = DbTarget(cfg.database_url).dbname if cfg.database_url else None
        backup, scratch = fetch_for_restore(cfg, destination, selector, kind, before, database)
        try:
            return _restore_selected(cfg, backup, target_url, clean, with_globals, jobs, tables, schemas)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    backup = select_backup(cfg, selector, kind, before)
    return _restore_selected(cfg, backup, target_url, clean, with_globals, jobs, tables, schemas)


def _restore_selected(cfg: Config, backup: Backup, target_url: Optional[str], clean: bool, with_globals: bool,
                      jobs: Optional[int], tables: Sequence[str], schemas: Sequence[str]) -> RestoreResult:
    if target_url:
        target = DbTarget(target_url)
        if cfg.database_url:
            # Restoring next to the source: the password of DATABASE_URL serves without repeating it in argv.
            target.borrow_password(DbTarget(cfg.database_url))
    elif tables or schemas:
        # The strategy's partial recovery: a temporary database beside the source, never the source itself.
        source = DbTarget(cfg.require_database_url())
        target = source.for_database("%s_partial_%s" % (source.dbname, utc_now().strftime("%Y%m%d%H%M%S")))
    else:
        target = DbTarget(cfg.require_database_url())
    restorer = Restorer(cfg, backup, target, clean=clean, with_globals=with_globals, jobs=jobs, tables=tables,
                        schemas=schemas)
    log = RunLog(Repository(cfg.backup_dir).log_dir)
    try:
        result = restorer.run()
    except BackupError as exc:
        log.failure("restore-failed", id=backup.id, target=target.url, step=exc.step, error=str(exc))
        raise
    log.info("restore-ok", id=backup.id, target=result.target, replaced=result.replaced,
             globals=result.globals_applied, partial=bool(tables or schemas), seconds=result.seconds)
    return result
