# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical backups: full, schema and data with pg_dump; cluster globals with pg_dumpall.

The operation every front end runs: ``plan_backup`` decides whether a backup is due (the ``max_age`` /
``force`` window of the pg_backup module; check mode shows it), ``run_backup`` takes it and copies it to
the destinations. The CLI's ``create``, the timers and the module call these two; none decides alone.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import __version__
from ..codec.compression import SUFFIX
from ..codec.crypto import Binding
from ..codec.stored import sealing_for
from ..config.connection import DbTarget
from ..config.settings import BACKUP_KINDS, PHYSICAL_KINDS, Config, parse_kind
from ..core.clock import is_future, iso, utc_now
from ..core.duration import format_duration, parse_duration
from ..core.errors import BackupError, ConfigError
from ..core.runlog import RunLog
from ..core.testpoints import pause
from ..model.manifest import FORMAT_VERSION, Backup
from ..pg.basebackup import (TarScanner, basebackup_command, check_base_tar, parse_backup_manifest,
                             replication_refused, summaries_refused, tablespace_refused)
from ..pg.binaries import ClientTools, any_psql, select_tools
from ..pg.client import ServerInfo, query, server_info, user_object_count
from ..pg.pipeline import stream_tool_to_file
from ..pg.runner import run
from ..pg.snapshot import SnapshotSession, snapshot_flag
from ..repo.catalog import leftover_grace, open_repository, present
from .incremental import (NATIVE, WAL, WAL_WAIT_SECONDS, archive_reach, choose_method, has_tar, lsn_value,
                          server_settings, switch_wal, timeline_problem, wal_archive, wait_until_archived)
from .physical import backup_manifest_of, scratch_dir
from .sync import copy_new_backup

PROG = "seawall-pgbackup"
DUMP_FLAGS = {"full": [], "schema": ["--schema-only"], "data": ["--data-only"]}
CLUSTER_DUMP_HEAD = b"PostgreSQL database cluster dump"
CLUSTER_DUMP_END = b"PostgreSQL database cluster dump complete"
DATABASE_LEVEL = ("ALTER DATABASE ", "ALTER ROLE ", "COMMENT ON DATABASE ", "GRANT ", "REVOKE ",
                  "SECURITY LABEL ON DATABASE ")


def check_custom_archive(head: bytes, tail: bytes, raw_size: int) -> Optional[str]:
    if raw_size == 0:
        return "the dump is empty"
    if not head.startswith(b"PGDMP"):
        return "the dump has no custom-format header (PGDMP)"
    return None


def check_cluster_sql(head: bytes, tail: bytes, raw_size: int) -> Optional[str]:
    if raw_size == 0:
        return "the globals dump is empty"
    if CLUSTER_DUMP_HEAD not in head:
        return "the globals dump has no 'PostgreSQL database cluster dump' header"
    if CLUSTER_DUMP_END not in tail:
        return "the globals dump is truncated (no 'dump complete' trailer)"
    return None


def _globals_command(tools: ClientTools, target: DbTarget, info: ServerInfo) -> List[str]:
    cmd = [tools.path("pg_dumpall"), "--globals-only", "--no-password", "--dbname=" + target.url]
    if not info.is_superuser:
        # Managed services deny pg_authid to everyone; without passwords the roles still restore.
        cmd.append("--no-role-passwords")
    return cmd


def _dump_command(tools: ClientTools, target: DbTarget, kind: str, snapshot: Optional[str]) -> List[str]:
    return [tools.path("pg_dump"), "--format=custom", "--compress=0", "--no-password",
            "--dbname=" + target.url] + DUMP_FLAGS[kind] + snapshot_flag(snapshot)


def database_statements(tools: ClientTools, target: DbTarget) -> List[str]:
    """Database-level settings, comment and grants (pg_dump keeps them outside the restorable objects)."""
    cmd = [tools.path("pg_dump"), "--schema-only", "--create", "--exclude-schema=*", "--no-password",
           "--dbname=" + target.url]
    out = run(cmd, "pg_dump", target, step="dump")
    statements: List[str] = []
    current = ""
    for line in out.stdout.decode("utf-8").splitlines(keepends=True):
        if not current and not line.startswith(DATABASE_LEVEL):
            continue
        current += line
        if line.rstrip().endswith(";"):
            statements.append(current.rstrip("\n"))
            current = ""
    return statements


def _file_entry(result, role: str, fmt: str, algorithm: str) -> Dict[str, Any]:
    return {"name": os.path.basename(result.path), "role": role, "format": fmt, "compression": algorithm,
            "size": result.size, "sha256": result.sha256, "raw_size": result.raw_size}


class BackupRun:
    """One backup of one kind: prepare, lock, dump, write the manifest last."""

    def __init__(self, cfg: Config, kind: str, log: Optional[RunLog] = None) -> None:
        self.cfg = cfg
        self.kind = parse_kind("type", kind, allowed=BACKUP_KINDS)
        # Encryption: the keys are checked now, before anything is dumped (docs/encryption.md).
        self.sealing = sealing_for(cfg) if cfg.encryption_for(self.kind) else None
        self.target = DbTarget(cfg.require_database_url())
        self.repo = open_repository(cfg)
        self.repo.trust.require_signer()  # its manifest will be signed: the key is checked before the dump
        self.log = log
        self.removed_leftovers: List[str] = []

    def run(self) -> Backup:
        started = utc_now()
        self.repo.prepare()
        log = self.log or RunLog(self.repo.log_dir)
        try:
            with self.repo.lock():
                self.removed_leftovers = self.repo.remove_leftovers(leftover_grace(self.cfg))
                for path in self.removed_leftovers:
                    log.warning("removed-incomplete", path=path)
                backup = self._take(started)
        except BackupError as exc:
            log.failure("backup-failed", type=self.kind, database=self.target.dbname, url=self.target.url,
                        step=exc.step, error=str(exc))
            raise
        except KeyboardInterrupt:
            log.failure("backup-failed", type=self.kind, database=self.target.dbname, step="interrupted",
                        error="interrupted")
            raise
        finally:
            self.target.close()
        log.info("backup-ok", type=self.kind, database=backup.database, id=backup.id, size=backup.size,
                 seconds=backup.manifest.duration_seconds)
        return backup

    def _binding(self, backup_id: str, dest: str) -> Binding:
        """What an encrypted file is bound to: this repository, this backup, this file name."""
        return Binding(self.cfg.repository_id, backup_id, os.path.basename(dest))

    def _take(self, started: datetime) -> Backup:
        psql = any_psql(self.cfg.pg_bin_dir)
        info = server_info(psql, self.target)
        if self.kind == "incremental":
            self._parent(info)  # none yet: say so first, whatever the server's settings
            method = choose_method(info.major, server_settings(psql, self.target))
            if method.name == WAL:
                return self._take_wal_link(started, info, psql)
        if self.kind in PHYSICAL_KINDS:
            return self._take_base(started, info)
        tools = select_tools(info.major, self.cfg.pg_bin_dir)
        algorithm = self.cfg.compression_for(self.kind)
        level = self.cfg.compression_level
        backup_id = self.repo.new_id(self.kind, info.database, started)
        directory = self.repo.kind_dir(self.kind)
        env = self.target.env()
        files: List[Dict[str, Any]] = []
        warnings: List[str] = []
        written: List[str] = []
        objects = user_object_count(tools.path("psql"), self.target) if self.kind != "globals" else None
        db_sql = database_statements(tools, self.target) if self.kind in ("full", "schema") else None
        counts: Dict[str, Any] = {}
        session = None
        seal_suffix = self.sealing.suffix if self.sealing else ""
        try:
            if self.kind != "globals":
                session = SnapshotSession(tools.path("psql"), self.target)
                snapshot = session.export()
                if self.kind in ("full", "data"):
                    session.count_rows_in_background()  # same snapshot as the dump, on the other core
                dest = os.path.join(directory, "%s.dump%s%s" % (backup_id, SUFFIX[algorithm], seal_suffix))
                result = stream_tool_to_file(_dump_command(tools, self.target, self.kind, snapshot), env, dest,
                                             algorithm, level, check_custom_archive, "pg_dump", "dump",
                                             sealing=self.sealing, binding=self._binding(backup_id, dest))
                written.append(result.path)
                files.append(_file_entry(result, "database", "custom", algorithm))
                warnings.extend(result.warnings)
                counts = session.finish()
                session = None
            if self.kind in ("full", "globals"):
                name = "%s.globals.sql%s" if self.kind == "full" else "%s.sql%s"
                dest = os.path.join(directory, name % (backup_id, SUFFIX[algorithm]) + seal_suffix)
                result = stream_tool_to_file(_globals_command(tools, self.target, info), env, dest, algorithm,
                                             level, check_cluster_sql, "pg_dumpall", "globals",
                                             sealing=self.sealing, binding=self._binding(backup_id, dest))
                written.append(result.path)
                files.append(_file_entry(result, "globals", "plain", algorithm))
                warnings.extend(result.warnings)
            manifest = self._manifest(backup_id, started, info, tools, files, algorithm, warnings)
            manifest.update({
                "user_objects": objects,
                "database_size": counts.get("size"),
                "table_rows": counts.get("rows"),
                "database_sql": db_sql,
                "globals": {"role_passwords": info.is_superuser} if self.kind in ("full", "globals") else None,
            })
            return self._save(backup_id, manifest)
        except BaseException:
            if session is not None:
                session.close()
            for path in written:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise

    def _take_base(self, started: datetime, info: ServerInfo) -> Backup:
        """A physical base backup of the whole cluster: pg_basebackup's one tar (data directory, the WAL it
        needs, its backup_manifest) streamed through compression, encryption and sha256 into one file. An
        incremental (17+) is the same tar of what changed since its parent, the newest base or incremental."""
        tools = select_tools(info.major, self.cfg.pg_bin_dir, tools=("pg_basebackup", "psql"))
        algorithm = self.cfg.compression_for(self.kind)
        backup_id = self.repo.new_id(self.kind, info.database, started)
        dest = os.path.join(self.repo.kind_dir(self.kind), "%s.base.tar%s%s" % (
            backup_id, SUFFIX[algorithm], self.sealing.suffix if self.sealing else ""))
        scanner = TarScanner()
        cmd = basebackup_command(tools, self.target, backup_id)
        parent = self._parent(info, tar=True) if self.kind == "incremental" else None
        scratch = scratch_dir(self.cfg, "incremental") if parent is not None else None
        try:
            if parent is not None and scratch is not None:
                # pg_basebackup --incremental reads the parent's backup_manifest from a file: decrypted to scratch
                path = os.path.join(scratch, "parent_backup_manifest")
                with open(path, "xb") as handle:
                    handle.write(backup_manifest_of(self.cfg, parent))
                cmd.append("--incremental=" + path)
            result = stream_tool_to_file(cmd, self.target.env(), dest, algorithm, self.cfg.compression_level,
                                         check_base_tar, "pg_basebackup", "base", sealing=self.sealing,
                                         binding=self._binding(backup_id, dest), on_chunk=scanner.feed)
        except BackupError as exc:
            refused = (replication_refused(exc, self.target.user or info.current_user) or tablespace_refused(exc)
                       or summaries_refused(exc))
            if refused is not None:
                raise refused from None
            raise
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        try:
            wal = parse_backup_manifest(scanner.kept)
            entry = _file_entry(result, "base", "tar", algorithm)
            manifest = self._manifest(backup_id, started, info, tools, [entry], algorithm, result.warnings)
            manifest.update({"method": "physical", "start_lsn": wal.start_lsn, "stop_lsn": wal.stop_lsn,
                             "timeline": wal.timeline, "parent": parent.id if parent is not None else None})
            if parent is not None:
                manifest["incremental"] = NATIVE
            return self._save(backup_id, manifest)
        except BaseException:
            try:
                os.unlink(result.path)
            except OSError:
                pass
            raise

    def _take_wal_link(self, started: datetime, info: ServerInfo, psql: str) -> Backup:
        """A WAL-method incremental (ops/incremental.py): switch the segment, wait until the archive holds the WAL
        from the parent's end to the switch, record that range. No data file: the WAL is the archive's."""
        parent = self._parent(info)
        start, start_timeline = parent.manifest.stop_lsn, parent.manifest.timeline
        if not start or not start_timeline:
            raise ConfigError("%s records no WAL range (stop_lsn, timeline): take a base backup first" % parent.id)
        tools = select_tools(info.major, self.cfg.pg_bin_dir, tools=("psql",))
        switch = switch_wal(psql, self.target, self.target.user or info.current_user)
        if lsn_value(switch.point) < lsn_value(start):
            raise BackupError("the server's WAL position %s is before the end of %s (%s): is it the same cluster, "
                              "restored to an earlier point? Take a base backup" % (switch.point, parent.id, start))
        backup_id = self.repo.new_id(self.kind, info.database, started)
        archive = wal_archive(self.cfg)
        try:  # wal-push takes no lock: the records appear while this run holds the repository's
            wait_until_archived(lambda: archive_reach(archive.segments(), start, start_timeline, switch.lsn),
                                lsn_value(switch.lsn), WAL_WAIT_SECONDS, backup_id)
            # the history files of the server's timeline are archived before its segments: known by now
            problem = timeline_problem(archive.segments(), int(start_timeline), start, switch.timeline)
            if problem:
                raise ConfigError("%s cannot be an incremental of %s: %s" % (backup_id, parent.id, problem))
        finally:
            archive.close()
        algorithm = self.cfg.compression_for(self.kind)
        manifest = self._manifest(backup_id, started, info, tools, [], algorithm, [])
        manifest.update({"method": WAL, "incremental": WAL, "start_lsn": start, "stop_lsn": switch.point,
                         "timeline": switch.timeline, "start_timeline": start_timeline, "parent": parent.id})
        return self._save(backup_id, manifest)

    def preflight(self) -> List[str]:
        """Check mode: what a run needs before it dumps, with a run's one-line errors but no lock and nothing
        written: the keys (checked when this run was made), a writable repository, client tools, the connection
        and login, the parent of an incremental, the privileges of the kind, tools of at least the server's
        major. Returns what was checked."""
        try:
            return self._preflight()
        finally:
            self.target.close()

    def _preflight(self) -> List[str]:
        checked = [_check_writable(self.repo.root or self.cfg.backup_dir)]
        psql = any_psql(self.cfg.pg_bin_dir)
        info = server_info(psql, self.target)
        checked.append("connected to %s as %s (PostgreSQL %d)"
                       % (self.target.describe(), info.current_user, info.major))
        wal_link = False
        if self.kind == "incremental":
            checked.append("parent %s" % self._parent(info).id)
            wal_link = choose_method(info.major, server_settings(psql, self.target)).name == WAL
        tools: Sequence[str] = ("pg_dump", "pg_dumpall", "psql")
        if wal_link:
            tools = ("psql",)
            _require(psql, self.target, "has_function_privilege('pg_switch_wal()', 'EXECUTE')",
                     "a WAL-method incremental needs EXECUTE on pg_switch_wal() for role %s" % info.current_user)
        elif self.kind in PHYSICAL_KINDS:
            tools = ("pg_basebackup", "psql")
            _require(psql, self.target,
                     "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
                     "a base backup needs a replication connection: role %s needs REPLICATION (or superuser)"
                     % info.current_user)
        elif self.kind != "globals":
            denied = [row[0] for row in query(psql, self.target, _UNREADABLE)]
            if denied:
                raise ConfigError("role %s cannot read %s%s in database %s: pg_dump would fail (GRANT SELECT, and "
                                  "USAGE on the schema, or use a role that has them)" % (
                                      info.current_user, ", ".join(denied[:5]), " and more" if len(denied) > 5 else "",
                                      info.database))
        chosen = select_tools(info.major, self.cfg.pg_bin_dir, tools=tuple(tools))
        checked.append("client tools %s in %s" % (chosen.version, chosen.bin_dir))
        return checked

    def _parent(self, info: ServerInfo, tar: bool = False) -> Backup:
        """The newest good base or incremental backup of this cluster (same system identifier): the next link.
        ``tar``: of a native link, the newest with a backup_manifest (a base or a native incremental)."""
        found = [b for kind in PHYSICAL_KINDS for b in present(self.repo.backups(kind=kind))
                 if b.manifest.server is not None
                 and str(b.manifest.server.system_identifier) == str(info.system_identifier)
                 and (not tar or has_tar(b))]
        if not found:
            raise ConfigError("an incremental backup builds on a base backup of this cluster (system identifier %s): "
                              "there is none yet; take a base backup first" % info.system_identifier)
        return max(found, key=lambda b: b.created_at)

    def _manifest(self, backup_id: str, started: datetime, info: ServerInfo, tools: ClientTools,
                  files: List[Dict[str, Any]], algorithm: str, warnings: List[str]) -> Dict[str, Any]:
        finished = utc_now()
        manifest = {
            "format_version": FORMAT_VERSION,
            "id": backup_id,
            "repository": self.cfg.repository_id,
            "type": self.kind,
            "method": "logical",
            "status": "ok",
            "database": info.database,
            "created_at": iso(started),
            "finished_at": iso(finished),
            "duration_seconds": round((finished - started).total_seconds(), 3),
            "host": socket.gethostname(),
            "tool": {"name": "seawall-pgbackup", "version": __version__},
            "source": {"url": self.target.url, "user": info.current_user, "superuser": info.is_superuser},
            "server": {"version": info.version, "version_num": info.version_num, "major": info.major,
                       "system_identifier": info.system_identifier, "encoding": info.encoding,
                       "collate": info.collate, "ctype": info.ctype},
            "client": {"version": tools.version, "major": tools.major, "bin_dir": tools.bin_dir},
            "files": files,
            "compression": algorithm,
            "encryption": self.sealing.record() if self.sealing else None,
            "parent": None,
            "user_objects": None,
            "database_size": None,
            "table_rows": None,
            "database_sql": None,
            "globals": None,
            "warnings": warnings,
            "verification": None,
        }
        return manifest

    def _save(self, backup_id: str, manifest: Dict[str, Any]) -> Backup:
        backup = Backup(manifest, self.repo.manifest_path(self.kind, backup_id))
        pause("create-manifest")  # crash tests: every file written, no manifest yet
        self.repo.save(backup)  # last (and signed): until now nothing of this run is listed or restorable
        pause("create-saved")
        return backup


# Tables, sequences and views pg_dump reads that the role cannot (SELECT, or USAGE on their schema).
_UNREADABLE = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND (NOT has_schema_privilege(n.oid, 'USAGE') OR NOT has_table_privilege(c.oid, 'SELECT'))
ORDER BY 1 LIMIT 6
"""


def _require(psql: str, target: DbTarget, condition: str, message: str) -> None:
    rows = query(psql, target, "SELECT coalesce(%s, false)" % condition)
    if not rows or rows[0][0] != "t":
        raise ConfigError(message)


def _check_writable(path: str) -> str:
    """The repository directory, or the nearest existing folder above it, must be writable by this user."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError("backup directory %s cannot be created: %s is not a directory" % (path, existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("backup directory %s cannot be %s by user %s" % (
            path, "written" if existing == os.path.abspath(path) else "created (%s is not writable)" % existing,
            getpass.getuser()))
    return "backup directory %s %s" % (path, "writable" if existing == os.path.abspath(path) else "can be created")


def preflight_backup(cfg: Config, kind: Optional[str] = None) -> List[str]:
    """Check mode's prediction of ``create_backup`` (BackupRun.preflight): one-line errors, nothing written."""
    return BackupRun(cfg, kind or cfg.backup_type).preflight()


def create_backup(cfg: Config, kind: Optional[str] = None) -> Backup:
    return BackupRun(cfg, kind or cfg.backup_type).run()


def newest_good(cfg: Config, kind: str, database: Optional[str] = None,
                now: Optional[datetime] = None) -> Optional[Backup]:
    """The newest good backup of ``kind`` not dated in the future (a clock that ran ahead never satisfies max_age)."""
    found = present(open_repository(cfg).backups(kind=kind, database=database), now)
    return found[-1] if found else None


def database_of(url: str, env: Optional[Mapping[str, str]] = None) -> str:
    """The database libpq connects to for ``url``: its path, else PGDATABASE, else the user name."""
    env = os.environ if env is None else env
    target = DbTarget(url)
    return target.dbname or env.get("PGDATABASE") or target.user or env.get("PGUSER") or getpass.getuser()


def restore_command(backup: Backup, backup_dir: Optional[str] = None) -> str:
    """The command that restores ``backup`` into a new database (globals first for a full backup), or into a new
    data directory (a base backup)."""
    if backup.kind in PHYSICAL_KINDS:
        return "%s%s restore %s --pgdata /path/to/new/datadir" % (
            PROG, " --backup-dir %s" % shlex.quote(backup_dir) if backup_dir else "", backup.id)
    return "%s%s restore %s --target-url postgresql://USER@HOST:PORT/NEWDB%s" % (
        PROG, " --backup-dir %s" % shlex.quote(backup_dir) if backup_dir else "", backup.id,
        " --with-globals" if backup.kind == "full" else "")


@dataclass
class BackupPlan:
    """Whether a run takes a backup, and why (what check mode and diff show)."""

    kind: str
    database: str
    take: bool
    reason: str
    newest: Optional[Backup] = None
    age_seconds: Optional[int] = None
    max_age_seconds: int = 0
    force: bool = False

    def as_dict(self) -> Dict[str, Any]:
        return {"type": self.kind, "database": self.database, "take": self.take, "reason": self.reason,
                "newest": self.newest.id if self.newest else None, "age_seconds": self.age_seconds,
                "max_age_seconds": self.max_age_seconds, "force": self.force}


def decide_backup(kind: str, database: str, newest: Optional[Backup], max_age_seconds: int = 0,
                  force: bool = False, now: Optional[datetime] = None) -> BackupPlan:
    """The max_age window: skip only when a good backup of ``kind`` is younger than ``max_age_seconds`` (> 0).

    A backup dated in the future (clock skew) is no evidence of a recent backup: a backup is taken.
    """
    now = now or utc_now()
    ahead = newest is not None and is_future(newest.created_at, now)
    age = max(0, int((now - newest.created_at).total_seconds())) if newest and not ahead else None
    plan = BackupPlan(kind, database, True, "", newest, age, max_age_seconds, force)
    if force:
        plan.reason = "force: a backup is taken whatever the newest one's age"
    elif newest is not None and ahead:
        plan.reason = ("the newest good %s backup of %s (%s) is dated in the future (clock skew?): it does not count"
                       % (kind, database, newest.id))
    elif newest is None or age is None:
        plan.reason = "no good %s backup of %s yet" % (kind, database)
    elif max_age_seconds <= 0:
        plan.reason = "max_age is 0: every run takes a backup"
    elif age < max_age_seconds:
        plan.take = False
        plan.reason = ("a good %s backup of %s (%s) is %s old, younger than max_age %s"
                       % (kind, database, newest.id, format_duration(age), format_duration(max_age_seconds)))
    else:
        plan.reason = ("the newest good %s backup of %s (%s) is %s old, not younger than max_age %s"
                       % (kind, database, newest.id, format_duration(age), format_duration(max_age_seconds)))
    return plan


def plan_backup(cfg: Config, kind: Optional[str] = None, max_age: Any = 0, force: bool = False,
                now: Optional[datetime] = None) -> BackupPlan:
    """Whether ``run_backup`` is due; ``max_age`` is a duration (``'20h'``) or seconds, 0 meaning always."""
    kind = kind or cfg.backup_type
    max_age_seconds = int(parse_duration("max_age", 0 if max_age is None else max_age).total_seconds())
    database = database_of(cfg.require_database_url())
    return decide_backup(kind, database, newest_good(cfg, kind, database=database, now=now), max_age_seconds, force,
                         now)


@dataclass
class BackupOutcome:
    """What ``run_backup`` did: set as it goes, so a failed copy still shows the complete local backup."""

    backup: Optional[Backup] = None
    copies: List[Dict[str, Any]] = field(default_factory=list)


def run_backup(cfg: Config, kind: Optional[str] = None, outcome: Optional[BackupOutcome] = None) -> BackupOutcome:
    """Take a backup of ``kind`` (default: the configured type), then copy it to every enabled destination.

    A failed copy raises after ``outcome.backup`` is set: the local backup stays complete and listed.
    """
    outcome = outcome if outcome is not None else BackupOutcome()
    outcome.backup = create_backup(cfg, kind)
    outcome.copies = copy_new_backup(cfg, outcome.backup)["copied"]
    if outcome.copies:  # the copies are recorded in the manifest
        outcome.backup = open_repository(cfg).find(outcome.backup.manifest_path, allow_bad=True)
    return outcome
