# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staging database a full or schema restore fills, swapped in for the target only once it is complete.

A failed restore leaves the target exactly as it was: the staging database is dropped instead.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

from ...config.connection import DbTarget
from ...core.errors import BackupError
from ...core.testpoints import pause
from ...model.manifest import SourceServer
from ..client import execute, query, quote_ident, quote_literal

STAGING_SUFFIX = "__seawall_restore"
RESTORED_SETTING = "seawall.restored_backup"


def staging_name(target: str) -> str:
    """``<target>__seawall_restore`` within PostgreSQL's 63-byte identifier limit."""
    room = 63 - len(STAGING_SUFFIX)
    encoded = target.encode("utf-8")[:room]
    return encoded.decode("utf-8", "ignore") + STAGING_SUFFIX


def create_database(psql: str, admin: DbTarget, name: str, server: SourceServer, warnings: List[str]) -> None:
    """An empty database with the source's encoding and locale (the server's default locale when it lacks it)."""
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
            warnings.append("locale %s unavailable on the target, using the server default: %s"
                            % (server.collate, exc))
    execute(psql, admin, base)


def drop_database(psql: str, admin: DbTarget, name: str, force: bool = False) -> None:
    execute(psql, admin, "DROP DATABASE IF EXISTS %s%s" % (quote_ident(name), " WITH (FORCE)" if force else ""))


def drop_quietly(psql: str, admin: DbTarget, name: str) -> None:
    """Cleanup after a failure: the original error matters more than this one."""
    try:
        drop_database(psql, admin, name)
    except BackupError:
        pass


def swap_in(psql: str, admin: DbTarget, staging: str, name: str, replace: bool, server_major: int) -> None:
    """Drop the old target (when ``replace``) and rename the staging database to the target's name."""
    if replace:
        force = " WITH (FORCE)" if server_major >= 13 else ""
        execute(psql, admin, "DROP DATABASE %s%s" % (quote_ident(name), force))
        pause("restore-dropped")  # crash tests: the old target is gone, the new one not yet in its place
    execute(psql, admin, "ALTER DATABASE %s RENAME TO %s" % (quote_ident(staging), quote_ident(name)))


def rename_database(statement: str, source: str, target: str) -> str:
    """Point a pg_dump database-level statement at ``target`` instead of ``source``."""
    quoted = quote_ident(target)
    for form in (quote_ident(source), source):
        pattern = re.compile(r"(DATABASE )%s(?=[ ;])" % re.escape(form))
        if pattern.search(statement):
            return pattern.sub(lambda m: m.group(1) + quoted, statement, count=1)
    return statement


def apply_database_properties(psql: str, target: DbTarget, statements: Sequence[str], source: str,
                              warnings: List[str]) -> None:
    """Owner, settings, comment and grants of the source database, renamed to the target.

    Each statement stands alone: a role missing on this cluster costs that statement (reported
    as a warning), never the restored data.
    """
    for statement in statements:
        renamed = rename_database(statement, source, target.dbname or "")
        try:
            execute(psql, target, renamed)
        except BackupError as exc:
            warnings.append("database property not restored: %s" % exc)


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
