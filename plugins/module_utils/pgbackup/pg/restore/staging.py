# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staging database a full or schema restore fills, swapped in for the target only once it is complete.

A failed restore leaves the target exactly as it was: the staging database is dropped instead.
"""

from __future__ import annotations

import re
import time
from typing import List, Optional, Sequence

from ...config.connection import DbTarget
from ...core.errors import BackupError
from ...core.testpoints import pause
from ...model.manifest import SourceServer
from ..client import execute, query, quote_ident, quote_literal

STAGING_SUFFIX = "__seawall_restore"
OLD_INFIX = "__seawall_old_"
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


def aside_name(target: str, stamp: str) -> str:
    """``<target>__seawall_old_<stamp>`` within 63 bytes: where a replaced database waits to be dropped."""
    suffix = OLD_INFIX + stamp
    encoded = target.encode("utf-8")[:63 - len(suffix)]
    return encoded.decode("utf-8", "ignore") + suffix


def databases_aside(psql: str, admin: DbTarget, target: str) -> List[str]:
    """Old copies of ``target`` an interrupted replacement left (renamed aside, not yet dropped)."""
    prefix = aside_name(target, "")
    rows = query(psql, admin, "SELECT datname FROM pg_database WHERE left(datname, %d) = %s ORDER BY datname"
                 % (len(prefix), quote_literal(prefix)))
    return [row[0] for row in rows]


def _disconnect(psql: str, admin: DbTarget, names: Sequence[str]) -> None:
    """End the other sessions of ``names`` so they can be renamed (they may take a moment to go)."""
    listed = ", ".join(quote_literal(n) for n in names)
    query(psql, admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname IN (%s) AND pid <> pg_backend_pid()" % listed)


def swap_in(psql: str, admin: DbTarget, staging: str, name: str, replace: bool, stamp: str,
            server_major: int) -> Optional[str]:
    """Rename the staging database to the target's name; when ``replace``, the old target is renamed aside
    in the same transaction (the target name is never missing, whenever the run dies) and dropped after.

    Returns the aside name when its drop failed (the caller says where the old database is), else None.
    """
    if not replace:
        execute(psql, admin, "ALTER DATABASE %s RENAME TO %s" % (quote_ident(staging), quote_ident(name)))
        return None
    old = aside_name(name, stamp)
    swap = ("BEGIN; ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s RENAME TO %s; COMMIT;"
            % (quote_ident(name), quote_ident(old), quote_ident(staging), quote_ident(name)))
    for attempt in range(5):
        _disconnect(psql, admin, [name, staging])
        try:
            execute(psql, admin, swap)
            break
        except BackupError as exc:  # a client reconnected between the two statements: end it again
            if "being accessed by other users" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    pause("restore-swapped")
    try:
        _disconnect(psql, admin, [old])
        drop_database(psql, admin, old, force=server_major >= 13)
    except BackupError:
        return old
    return None


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
