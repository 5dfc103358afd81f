# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a backup with PostgreSQL's own tools, never leaving a half-restored target behind.

Full and schema backups are restored into a staging database that replaces the target only
once pg_restore succeeded, so a failed restore leaves the target exactly as it was. Data-only
backups are replayed into the existing schema in one transaction.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..codec.integrity import verify_checksums
from ..codec.stored import open_stored, require_keys
from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.errors import BackupError, ClientToolError, ConnectionFailed, RestoreError
from ..core.fsutil import describe_os_error
from ..model.manifest import Backup, SourceServer
from .binaries import ClientTools, any_psql, select_tools
from .client import ServerInfo, database_exists, execute
from .client import qualified as format_table
from .client import query, quote_ident, quote_literal, server_info, user_object_count
from .globals_sql import filter_globals, leading_identifier
from .pipeline import CHUNK, describe_exit
from .snapshot import count_rows
from .space import check_free_space

STAGING_SUFFIX = "__seawall_restore"
# A full restore fills materialized views with REFRESH (pg_dump stores no rows for them); a data-only
# restore does the same, in the same transaction, in creation order so dependent views see their sources.
REFRESH_MATVIEWS = b"""
DO $seawall$ DECLARE view regclass; BEGIN
  FOR view IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'm' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY c.oid
  LOOP EXECUTE 'REFRESH MATERIALIZED VIEW ' || view::text; END LOOP;
END $seawall$;
"""
_COPY_LINE = re.compile(r"^COPY (.+?) \(.*\) FROM stdin;$")
_LO_CREATE = re.compile(r"^SELECT pg_catalog\.lo_create\('(\d+)'\);$")


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

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def rename_database(statement: str, source: str, target: str) -> str:
    """Point a pg_dump database-level statement at ``target`` instead of ``source``."""
    quoted = quote_ident(target)
    for form in (quote_ident(source), source):
        pattern = re.compile(r"(DATABASE )%s(?=[ ;])" % re.escape(form))
        if pattern.search(statement):
            return pattern.sub(lambda m: m.group(1) + quoted, statement, count=1)
    return statement


def split_table_name(name: str) -> Tuple[str, str]:
    """``schema.table`` (``public`` when no schema is given); quote names that contain dots: ``"a.b".c``."""
    if name.startswith('"'):
        first, rest = leading_identifier(name)
        if rest.startswith("."):
            second = leading_identifier(rest[1:])[0]
            return first or "", second or ""
        return "public", first or ""
    if "." in name:
        schema, table = name.split(".", 1)
        return schema, leading_identifier(table)[0] or table
    return "public", name


def leaf_tables(psql: str, staged: DbTarget, tables: Sequence[Tuple[str, str]],
                schemas: Sequence[str]) -> List[Tuple[str, str]]:
    """The tables that hold the rows of the chosen ones (a partitioned table's rows live in its leaves)."""
    found: List[Tuple[str, str]] = []
    for schema, table in tables:
        name = quote_literal(format_table(schema, table))
        rows = query(psql, staged, (
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND (c.oid = to_regclass(%s) OR c.oid IN (SELECT relid FROM "
            "pg_partition_tree(to_regclass(%s)) WHERE isleaf))" % (name, name)))
        if not rows:
            raise RestoreError("table %s.%s is not in the backup" % (schema, table))
        found.extend((row[0], row[1]) for row in rows)
    for schema in schemas:
        rows = query(psql, staged, (
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = %s" % quote_literal(schema)))
        if not query(psql, staged, "SELECT 1 FROM pg_namespace WHERE nspname = %s" % quote_literal(schema)):
            raise RestoreError("schema %s is not in the backup" % schema)
        found.extend((row[0], row[1]) for row in rows)
    return sorted(set(found))


def check_partial_rows(psql: str, staged: DbTarget, backup: Backup, leaves: Sequence[Tuple[str, str]]) -> Dict[str, int]:
    """Every table a partial restore filled holds exactly the rows the backup recorded."""
    counts = count_rows(psql, staged, [list(t) for t in leaves])
    recorded = backup.manifest.table_rows or {}
    wrong = ["%s has %d rows, the backup recorded %d" % (k, v, recorded[k]) for k, v in sorted(counts.items())
             if k in recorded and recorded[k] != v]
    if wrong:
        raise RestoreError("partial restore is incomplete: " + "; ".join(wrong))
    return counts


RESTORED_SETTING = "seawall.restored_backup"


def record_restored(psql: str, target: DbTarget, backup_id: str, warnings: List[str]) -> None:
    """Mark the target with the backup it came from (a database setting: the comment belongs to the data)."""
    try:
        execute(psql, target, "ALTER DATABASE %s SET %s = %s"
                % (quote_ident(target.dbname or ""), RESTORED_SETTING, quote_literal(backup_id)))
    except BackupError as exc:
        warnings.append("could not record the restored backup id on %s: %s" % (target.dbname, exc))


def restored_backup_id(psql: str, target: DbTarget) -> Optional[str]:
    """The backup id recorded on ``target`` by an earlier restore, if any."""
    rows = query(psql, target, (
        "SELECT substr(c, length(%s) + 2) FROM pg_db_role_setting s, unnest(s.setconfig) c "
        "WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND s.setrole = 0 AND c LIKE %s" % (quote_literal(RESTORED_SETTING), quote_literal(RESTORED_SETTING + "=%"))))
    return rows[0][0] if rows else None


def staging_name(target: str) -> str:
    """``<target>__seawall_restore`` within PostgreSQL's 63-byte identifier limit."""
    room = 63 - len(STAGING_SUFFIX)
    encoded = target.encode("utf-8")[:room]
    return encoded.decode("utf-8", "ignore") + STAGING_SUFFIX


def _maintenance(target: DbTarget, psql: str) -> DbTarget:
    """A database to run CREATE/DROP DATABASE from (``postgres``, else ``template1``)."""
    for name in ("postgres", "template1"):
        candidate = target.for_database(name)
        try:
            query(psql, candidate, "SELECT 1", timeout=30)
            return candidate
        except BackupError as exc:
            if "does not exist" not in str(exc):
                raise
    raise ConnectionFailed("%s: neither database postgres nor template1 can be reached to create the target"
                           % target.url)


class _ToolRun:
    """A client tool fed from a stream; stderr kept in a file so it can never block the tool."""

    def __init__(self, cmd: List[str], env: Dict[str, str], tool: str, stdout=subprocess.DEVNULL) -> None:
        self.tool = tool
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=stdout, stderr=self.err, env=env)

    def feed(self, source: IO[bytes], label: str) -> None:
        try:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                self.proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the tool stopped reading; its exit status says why
        except (EOFError, OSError, ValueError) as exc:
            self.kill()
            raise RestoreError("%s is corrupt or truncated: %s" % (label, exc)) from None
        finally:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def finish(self, step: str) -> List[str]:
        code = self.proc.wait()
        self.err.seek(0)
        stderr = self.err.read().decode("utf-8", "replace")
        self.err.close()
        if code != 0:
            raise RestoreError(describe_exit(self.tool, code, stderr), step=step)
        return [ln.strip() for ln in stderr.splitlines() if ln.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Restorer:
    """Restore one backup into one target; ``tables``/``schemas`` make it partial (definitions of
    everything, rows of the chosen tables only: the strategy's partial-recovery procedure)."""

    def __init__(self, cfg: Config, backup: Backup, target: DbTarget, clean: bool = False,
                 with_globals: bool = False, jobs: Optional[int] = None, tables: Sequence[str] = (),
                 schemas: Sequence[str] = ()) -> None:
        self.cfg = cfg
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
        self.result = RestoreResult(backup.id, backup.kind, self.target.url, self.target.dbname, jobs=self.jobs)

    # ------------------------------------------------------------------ checks before anything is touched
    def _check_compatibility(self, info: ServerInfo) -> ClientTools:
        source = self.backup.manifest.server
        source_major = (source.major if source else None) or 0
        if info.major < source_major:
            raise ClientToolError("target server is PostgreSQL %d but backup %s comes from PostgreSQL %d: restore onto "
                                  "PostgreSQL %d or newer" % (info.major, self.backup.id, source_major, source_major))
        dump_major = (self.backup.manifest.client.major if self.backup.manifest.client else None) or 0
        return select_tools(max(info.major, dump_major), self.cfg.pg_bin_dir,
                            purpose="the target server and the backup's pg_dump")

    def run(self) -> RestoreResult:
        started = time.monotonic()
        verify_checksums(self.backup)  # never feed a damaged file to pg_restore
        require_keys(self.backup, self.cfg)  # a missing key fails here, naming its id
        psql = any_psql(self.cfg.pg_bin_dir)
        admin = _maintenance(self.target, psql)
        info = server_info(psql, admin)
        tools = self._check_compatibility(info)
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

    # ------------------------------------------------------------------ globals
    def _apply_globals(self, tools: ClientTools, admin: DbTarget, info: ServerInfo) -> None:
        entry = self.backup.file("globals")
        if entry is None:
            raise RestoreError("backup %s holds no cluster globals (only full and globals backups do)" % self.backup.id)
        psql = tools.path("psql")
        roles = {r[0] for r in query(psql, admin, "SELECT rolname FROM pg_roles")}
        spaces = {r[0] for r in query(psql, admin, "SELECT spcname FROM pg_tablespace")}
        path = self.backup.file_path(entry)
        run = _ToolRun([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", admin.url, "-f", "-"],
                       admin.env(), "psql")
        try:
            with open_stored(self.backup, entry, self.cfg) as raw:
                text = (line.decode("utf-8") for line in raw)
                for line in filter_globals(text, roles, info.current_user, spaces):
                    run.proc.stdin.write(line.encode("utf-8"))
            run.proc.stdin.close()
        except BrokenPipeError:
            pass
        except (EOFError, OSError, ValueError) as exc:
            run.kill()
            raise RestoreError("%s is corrupt or truncated: %s" % (path, exc)) from None
        self.result.warnings.extend(run.finish("globals"))
        self.result.globals_applied = True

    # ------------------------------------------------------------------ full / schema
    def _restore_staged(self, tools: ClientTools, admin: DbTarget, info: ServerInfo) -> None:
        psql = tools.path("psql")
        name = self.target.dbname
        exists = database_exists(psql, admin, name)
        if exists:
            objects = user_object_count(psql, self.target)
            if objects and not self.clean:
                raise RestoreError("target database %s already holds %d user objects: restore into another database"
                                   % (name, objects), hint="replace-target")
        staging = staging_name(name)
        staged = self.target.for_database(staging)
        execute(psql, admin, "DROP DATABASE IF EXISTS %s" % quote_ident(staging))
        self._create_database(psql, admin, staging)
        try:
            if self.tables or self.schemas:
                self._restore_partial(tools, staged)
            else:
                self._pg_restore(tools, staged, [[]])
            restored = user_object_count(psql, staged)
            expected = self.backup.manifest.user_objects
            if expected and restored == 0:
                raise RestoreError("pg_restore reported success but restored nothing (the backup recorded %d objects)"
                                   % expected)
            if exists:
                force = " WITH (FORCE)" if info.major >= 13 else ""
                execute(psql, admin, "DROP DATABASE %s%s" % (quote_ident(name), force))
                self.result.replaced = True
            execute(psql, admin, "ALTER DATABASE %s RENAME TO %s" % (quote_ident(staging), quote_ident(name)))
            self.result.objects = restored
            self._apply_database_properties(psql)
            record_restored(psql, self.target, self.backup.id, self.result.warnings)
        except BaseException:
            try:
                execute(psql, admin, "DROP DATABASE IF EXISTS %s" % quote_ident(staging))
            except BackupError:
                pass
            raise

    def _apply_database_properties(self, psql: str) -> None:
        """Owner, settings, comment and grants of the source database, renamed to the target.

        Each statement stands alone: a role missing on this cluster costs that statement (reported
        as a warning), never the restored data.
        """
        source = self.backup.database
        for statement in self.backup.manifest.database_sql or []:
            renamed = rename_database(statement, source, self.target.dbname)
            try:
                execute(psql, self.target, renamed)
            except BackupError as exc:
                self.result.warnings.append("database property not restored: %s" % exc)

    def _create_database(self, psql: str, admin: DbTarget, name: str) -> None:
        server = self.backup.manifest.server or SourceServer()
        base = "CREATE DATABASE %s TEMPLATE template0" % quote_ident(name)
        if server.encoding:
            base += " ENCODING %s" % quote_literal(server.encoding)
        if server.collate and server.ctype:
            try:
                execute(psql, admin, "%s LC_COLLATE %s LC_CTYPE %s" % (
                    base, quote_literal(server.collate), quote_literal(server.ctype)))
                return
            except BackupError as exc:
                # The source locale may not exist on this host: the server's default is the fallback.
                self.result.warnings.append("locale %s unavailable on the target, using the server default: %s"
                                            % (server.collate, exc))
        execute(psql, admin, base)

    def _restore_partial(self, tools: ClientTools, staged: DbTarget) -> None:
        """Every definition (so types, extensions and schemas are there), then the chosen tables' rows."""
        psql = tools.path("psql")
        with self._unpacked_archive() as plain:
            self._pg_restore(tools, staged, [["--section=pre-data"]], plain)
            leaves = leaf_tables(psql, staged, self.tables, self.schemas)
            self._pg_restore(tools, staged, [["--data-only", "--schema=" + schema, "--table=" + table]
                                             for schema, table in leaves], plain)
        self.result.rows = check_partial_rows(psql, staged, self.backup, leaves)

    @contextmanager
    def _unpacked_archive(self) -> Iterator[str]:
        """The archive decompressed beside the backups: parallel and repeated pg_restore runs need to seek."""
        entry = self.backup.file("database")
        path = self.backup.file_path(entry)
        scratch = tempfile.mkdtemp(prefix=".restore-", dir=os.path.dirname(self.backup.directory))
        try:
            plain = os.path.join(scratch, "archive.dump")
            try:
                with open_stored(self.backup, entry, self.cfg) as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except (EOFError, ValueError) as exc:
                raise RestoreError("%s is corrupt or truncated: %s" % (path, exc)) from None
            except OSError as exc:
                raise RestoreError("cannot unpack the archive: " + describe_os_error(exc, plain)) from None
            yield plain
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _pg_restore(self, tools: ClientTools, staged: DbTarget, passes: List[List[str]],
                    plain: Optional[str] = None) -> None:
        entry = self.backup.file("database")
        path = self.backup.file_path(entry)
        common = [tools.path("pg_restore"), "--exit-on-error", "--no-password", "--dbname=" + staged.url]
        env = staged.env()
        if plain is None and self.jobs > 1:
            with self._unpacked_archive() as unpacked:
                self._pg_restore(tools, staged, passes, unpacked)
            return
        if plain is not None:
            jobs = ["--jobs=%d" % self.jobs] if self.jobs > 1 else []
            for extra in passes:
                out = subprocess.run(common + jobs + extra + [plain], capture_output=True, env=env, check=False)
                if out.returncode != 0:
                    raise RestoreError(describe_exit("pg_restore", out.returncode,
                                                     out.stderr.decode("utf-8", "replace")))
            return
        run = _ToolRun(common + ["--single-transaction"], env, "pg_restore")
        try:
            with open_stored(self.backup, entry, self.cfg) as src:
                run.feed(src, path)
        except BaseException:
            run.kill()
            raise
        self.result.warnings.extend(run.finish("restore"))

    # ------------------------------------------------------------------ data only
    def _restore_data(self, tools: ClientTools) -> None:
        psql = tools.path("psql")
        tables = int(query(psql, self.target, (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
            "('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"))[0][0])
        if tables == 0:
            raise RestoreError("target database %s has no tables: restore a schema backup into it first"
                               % self.target.dbname)
        entry = self.backup.file("database")
        path = self.backup.file_path(entry)
        env = self.target.env()
        loader = _ToolRun([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
                           "-d", self.target.url, "-f", "-"], env, "psql")
        producer = _ToolRun([tools.path("pg_restore"), "--data-only", "--file=-"], env, "pg_restore",
                            stdout=subprocess.PIPE)
        failure: List[BaseException] = []

        def pump() -> None:
            try:
                with open_stored(self.backup, entry, self.cfg) as src:
                    producer.feed(src, path)
            except BaseException as exc:  # pylint: disable=broad-except
                failure.append(exc)

        feeder = threading.Thread(target=pump, daemon=True)
        feeder.start()
        try:
            self._copy_sql(producer.proc.stdout, loader.proc.stdin)
        finally:
            producer.proc.stdout.close()
            feeder.join()
        if failure:
            loader.kill()
            raise failure[0]
        try:
            self.result.warnings.extend(loader.finish("restore"))
        except RestoreError as exc:
            producer.kill()  # it only failed because psql stopped reading
            raise RestoreError("%s; nothing was changed (the data restore is one transaction)" % exc,
                               hint=None if self.clean else "replace-rows") from None
        self.result.warnings.extend(producer.finish("restore"))
        self.result.objects = tables

    def _copy_sql(self, source: IO[bytes], sink: IO[bytes]) -> None:
        """Stream pg_restore's SQL into psql; with --clean, empty each table right before it is filled."""
        in_copy = False
        try:
            for line in source:
                if self.clean and not in_copy:
                    text = line.decode("utf-8", "replace").rstrip("\n")
                    match = _COPY_LINE.match(text)
                    if match:
                        sink.write(("TRUNCATE %s CASCADE;\n" % match.group(1)).encode("utf-8"))
                    match = _LO_CREATE.match(text)
                    if match:
                        sink.write(("SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata "
                                    "WHERE oid = %s;\n" % match.group(1)).encode("ascii"))
                if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
                    in_copy = True
                elif in_copy and line in (b"\\.\n", b"\\.\r\n"):
                    in_copy = False
                sink.write(line)
            sink.write(REFRESH_MATVIEWS)
        except BrokenPipeError:
            pass
        finally:
            try:
                sink.close()
            except BrokenPipeError:
                pass
