# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a backup with PostgreSQL's own tools, never leaving a half-restored target behind.

Full and schema backups are restored into a staging database that replaces the target only
once pg_restore succeeded, so a failed restore leaves the target exactly as it was. Data-only
backups are replayed into the existing schema in one transaction.

This module puts the steps in order; each step lives in ``pg/restore/`` (one concern a module).
The names below are what the rest of the engine and the modules import from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..codec.integrity import verify_checksums
from ..codec.stored import require_keys
from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import utc_now
from ..core.errors import ConfigError, RestoreError
from ..core.testpoints import pause
from ..model.manifest import Backup, SourceServer
from .binaries import ClientTools, any_psql
from .client import ServerInfo, database_exists, server_info, user_object_count
from .restore.archive import pg_restore
from .restore.checks import compatible_tools, maintenance_target
from .restore.cluster_globals import apply_globals
from .restore.data import REFRESH_MATVIEWS, restore_data
from .restore.partial import check_partial_rows, leaf_tables, restore_partial, split_table_name
from .restore.staging import (RESTORED_SETTING, STAGING_SUFFIX, apply_database_properties, create_database,
                              databases_aside, drop_database, drop_quietly, record_restored, rename_database,
                              restored_backup_id, staging_name, swap_in)
from .space import check_free_space

__all__ = ["REFRESH_MATVIEWS", "RESTORED_SETTING", "STAGING_SUFFIX", "RestoreResult", "Restorer",
           "check_partial_rows", "leaf_tables", "record_restored", "refuse_partial_clean", "rename_database",
           "restored_backup_id", "split_table_name", "staging_name"]


@dataclass
class RestoreResult:
    backup_id: str
    kind: str
    target: str
    database: Optional[str]
    replaced: bool = False
    globals_applied: bool = False
    objects: Optional[int] = None
    seconds: float = 0.0
    jobs: int = 1
    rows: Optional[Dict[str, int]] = None
    warnings: List[str] = field(default_factory=list)
    failed_objects: List[str] = field(default_factory=list)  # keep going: what pg_restore could not restore

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def refuse_partial_clean(clean: bool, tables: Sequence[str], schemas: Sequence[str]) -> None:
    """A partial restore never replaces (drops) its target: the database would lose every other table."""
    if clean and (tables or schemas):
        raise ConfigError("a partial restore (chosen tables or schemas) never replaces the target database: "
                          "the other tables would be lost", hint="partial-aside")


class Restorer:
    """Restore one backup into one target; ``tables``/``schemas`` make it partial (definitions of
    everything, rows of the chosen tables only: the strategy's partial-recovery procedure)."""

    def __init__(self, cfg: Config, backup: Backup, target: DbTarget, clean: bool = False,
                 with_globals: bool = False, jobs: Optional[int] = None, tables: Sequence[str] = (),
                 schemas: Sequence[str] = (), keep_going: bool = False) -> None:
        self.cfg = cfg
        # Keep going: objects pg_restore cannot restore are listed (result.failed_objects), the rest put in place.
        self.keep_going = keep_going
        self.backup = backup
        self.target = target
        if not self.target.dbname and backup.kind != "globals":
            raise RestoreError("target URL %s names no database" % self.target.url)
        self.clean = clean
        self.with_globals = with_globals or backup.kind == "globals"
        self.jobs = jobs or cfg.jobs
        self.tables = [split_table_name(t) for t in tables]
        self.schemas = list(schemas)
        if (self.tables or self.schemas) and backup.kind != "full":
            raise RestoreError("a partial restore needs a full backup; %s is a %s backup" % (backup.id, backup.kind))
        refuse_partial_clean(clean, tables, schemas)
        self.result = RestoreResult(backup.id, backup.kind, self.target.url, self.target.dbname, jobs=self.jobs)
        # What the restore needs from the manifest, read in one place.
        manifest = backup.manifest
        self.source_server = manifest.server or SourceServer()
        self.source_major = self.source_server.major or 0
        self.dump_major = (manifest.client.major if manifest.client else None) or 0
        self.recorded_objects: Optional[int] = manifest.user_objects
        self.recorded_rows: Dict[str, int] = manifest.table_rows or {}
        self.database_sql: List[str] = manifest.database_sql or []

    def run(self) -> RestoreResult:
        started = time.monotonic()
        verify_checksums(self.backup)  # never feed a damaged file to pg_restore
        require_keys(self.backup, self.cfg)  # a missing key fails here, naming its id
        psql = any_psql(self.cfg.pg_bin_dir)
        admin = maintenance_target(self.target, psql)
        info = server_info(psql, admin)
        tools = compatible_tools(info, self.backup.id, self.source_major, self.dump_major, self.cfg.pg_bin_dir)
        if self.backup.kind in ("full", "schema"):
            check_free_space(psql, admin, self.backup, self.result.warnings)
        try:
            if self.with_globals:
                self._apply_globals(tools, admin, info)
            if self.backup.kind in ("full", "schema"):
                self._restore_staged(tools, admin, info)
            elif self.backup.kind == "data":
                self._restore_data(tools)
        finally:
            self.target.close()
        self.result.seconds = round(time.monotonic() - started, 3)
        return self.result

    def _apply_globals(self, tools: ClientTools, admin: DbTarget, info: ServerInfo) -> None:
        entry = self.backup.file("globals")
        if entry is None:
            raise RestoreError("backup %s holds no cluster globals (only full and globals backups do)" % self.backup.id)
        self.result.warnings.extend(apply_globals(tools.path("psql"), admin, info, self.backup, entry, self.cfg))
        self.result.globals_applied = True

    def _restore_staged(self, tools: ClientTools, admin: DbTarget, info: ServerInfo) -> None:
        """Fill a staging database, check it, swap it in for the target; drop it on any failure."""
        psql = tools.path("psql")
        name = self.target.dbname or ""
        exists = database_exists(psql, admin, name)
        for old in databases_aside(psql, admin, name):  # an earlier replacement died before its drop
            if self.clean:  # replacing the target again: the old copy goes, as that replacement meant it to
                drop_database(psql, admin, old, force=info.major >= 13)
                self.result.warnings.append("dropped database %s, the replaced copy of %s that an interrupted "
                                            "restore left" % (old, name))
            else:
                self.result.warnings.append("an earlier restore left the replaced copy of %s as database %s: drop "
                                            "it once it is not needed" % (name, old))
        if exists:
            objects = user_object_count(psql, self.target)
            if objects and not self.clean:
                raise RestoreError("target database %s already holds %d user objects: restore into another database"
                                   % (name, objects), hint="replace-target")
        staging = staging_name(name)
        staged = self.target.for_database(staging)
        entry = self.backup.file("database")
        drop_database(psql, admin, staging)
        create_database(psql, admin, staging, self.source_server, self.result.warnings)
        failures: Optional[List[str]] = self.result.failed_objects if self.keep_going else None
        try:
            if self.tables or self.schemas:
                self.result.rows = restore_partial(psql, tools.path("pg_restore"), staged, self.backup, entry,
                                                   self.cfg, self.jobs, self.tables, self.schemas, self.recorded_rows,
                                                   failures)
            else:
                self.result.warnings.extend(pg_restore(tools.path("pg_restore"), staged, self.backup, entry,
                                                       self.cfg, [[]], self.jobs, failures=failures))
            restored = user_object_count(psql, staged)
            if self.recorded_objects and restored == 0:
                raise RestoreError("pg_restore reported success but restored nothing (the backup recorded %d objects)"
                                   % self.recorded_objects)
            pause("restore-before-swap")
            stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
            kept = swap_in(psql, admin, staging, name, exists, stamp, info.major)
            if kept:
                self.result.warnings.append("the replaced copy of %s could not be dropped: it is database %s"
                                            % (name, kept))
            self.result.replaced = exists
            self.result.objects = restored
            apply_database_properties(psql, self.target, self.database_sql, self.backup.database,
                                      self.result.warnings)
            record_restored(psql, self.target, self.backup.id, self.result.warnings)
        except BaseException:
            drop_quietly(psql, admin, staging)
            raise

    def _restore_data(self, tools: ClientTools) -> None:
        tables, warnings = restore_data(tools.path("psql"), tools.path("pg_restore"), self.target, self.backup,
                                        self.backup.file("database"), self.cfg, self.clean)
        self.result.warnings.extend(warnings)
        self.result.objects = tables
