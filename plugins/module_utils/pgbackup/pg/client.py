# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small SQL round trips through psql (the engine needs no database driver)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ..config.connection import DbTarget
from ..core.errors import BackupError, ConnectionFailed
from .runner import TimeoutExpired, first_error, run

_FIELD = "\x1f"
_RECORD = "\x1e"


@dataclass(frozen=True)
class ServerInfo:
    version_num: int
    version: str
    current_user: str
    is_superuser: bool
    database: str
    encoding: str
    collate: str
    ctype: str
    system_identifier: Optional[str]

    @property
    def major(self) -> int:
        return self.version_num // 10000


def explain_libpq_error(stderr: str, target: DbTarget) -> str:
    """The first meaningful line of a libpq/psql error, prefixed with where it happened."""
    return "%s: %s" % (target.describe(), first_error(stderr))


def query(psql: str, target: DbTarget, sql: str, timeout: float = 120) -> List[List[str]]:
    """Rows of text for one statement; raises ConnectionFailed or BackupError with one line.

    The statement goes to psql on stdin, never in argv: no length limit (a row count over thousands
    of tables is long) and nothing of it in ``ps``.
    """
    cmd = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--no-password", "-F", _FIELD, "-R", _RECORD,
           "-d", target.url, "-f", "-"]
    try:
        out = run(cmd, "psql", target, stdin=sql.encode("utf-8"), timeout=timeout, check=False)
    except TimeoutExpired:
        raise ConnectionFailed("%s: no answer within %d s" % (target.describe(), timeout)) from None
    if out.returncode != 0:
        message = explain_libpq_error(out.stderr, target)
        if out.returncode == 2 or "connection to server" in out.stderr or "could not connect" in out.stderr:
            raise ConnectionFailed("cannot connect to " + message)
        raise BackupError(message)
    body = out.stdout.decode("utf-8", "replace")
    if body.endswith("\n"):
        body = body[:-1]
    if not body:
        return []
    return [record.split(_FIELD) for record in body.split(_RECORD) if record != ""]


def execute(psql: str, target: DbTarget, sql: str, timeout: float = 600) -> None:
    query(psql, target, sql, timeout=timeout)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"``, always quoted: safe for to_regclass and any SQL position."""
    return quote_ident(schema) + "." + quote_ident(name)


def server_info(psql: str, target: DbTarget) -> ServerInfo:
    rows = query(psql, target, (
        "SELECT current_setting('server_version_num'), current_setting('server_version'), current_user, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_database(), "
        "pg_encoding_to_char(d.encoding), d.datcollate, d.datctype "
        "FROM pg_database d WHERE d.datname = current_database()"), timeout=60)
    if not rows:
        raise BackupError("%s: cannot read the server version" % target.describe())
    row = rows[0]
    system_id = None
    try:  # restricted to superusers and pg_monitor; the manifest does without it otherwise
        ids = query(psql, target, "SELECT system_identifier FROM pg_control_system()", timeout=30)
        system_id = ids[0][0] if ids else None
    except BackupError:
        pass
    return ServerInfo(int(row[0]), row[1].split(" ")[0], row[2], row[3] == "t", row[4], row[5], row[6], row[7], system_id)


def database_exists(psql: str, target: DbTarget, name: str) -> bool:
    rows = query(psql, target, "SELECT 1 FROM pg_database WHERE datname = %s" % quote_literal(name))
    return bool(rows)


def user_object_count(psql: str, target: DbTarget) -> int:
    """Relations, routines, schemas, extensions (but plpgsql) and large objects a database holds."""
    sql = ("SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
           "        AND n.nspname NOT LIKE 'pg_temp%') "
           "     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
           "        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) "
           "     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') "
           "     + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') "
           "        AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%') "
           "     + (SELECT count(*) FROM pg_largeobject_metadata)")
    return int(query(psql, target, sql)[0][0])
