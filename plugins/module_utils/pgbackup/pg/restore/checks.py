# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks made before a restore touches anything: which tools, which server, where to run CREATE DATABASE."""

from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple, Type

from ...config.connection import DbTarget
from ...core.errors import BackupError, ClientToolError, ConfigError, ConnectionFailed, LockedError, ResourceError
from ..binaries import ClientTools, select_tools
from ..client import ServerInfo, query


def compatible_tools(info: ServerInfo, backup_id: str, source_major: int, dump_major: int,
                     pg_bin_dir: Optional[str]) -> ClientTools:
    """Refuse a server older than the backup's source; tools at least as new as the server and the dump's pg_dump."""
    if info.major < source_major:
        raise ClientToolError("target server is PostgreSQL %d but backup %s comes from PostgreSQL %d: restore onto "
                              "PostgreSQL %d or newer" % (info.major, backup_id, source_major, source_major))
    return select_tools(max(info.major, dump_major), pg_bin_dir, purpose="the target server and the backup's pg_dump")


def maintenance_target(target: DbTarget, psql: str) -> DbTarget:
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
                           % target.describe())


# What a failed restore says when the surroundings failed, not the backup: the target server lacks an
# extension, a library, ICU or a locale the backup uses; roles or tablespaces are missing; the disk or
# memory ran out; the connection dropped; another session held a lock. Matched on the server's message
# (pg_restore prints no SQLSTATE), lower-cased.
_ENVIRONMENT: Sequence[Tuple[str, Type[BackupError], str]] = (
    (r"extension \S+ is not available|could not open extension control file|could not (access|load) (file|library)"
     r"|icu is not supported|could not create locale|not supported in this build|is not supported by this build"
     r"|(role|tablespace) \S+ does not exist|unsupported version .* in file header|server version mismatch",
     ResourceError, "the target server lacks something the backup uses"),
    (r"no space left on device|could not extend file|disk full|out of memory|quota exceeded",
     ResourceError, "the target server ran out of space or memory"),
    (r"could not connect|connection to server|server closed the connection|terminating connection"
     r"|too many clients|the database system is (starting up|shutting down|in recovery)|connection refused",
     ConnectionFailed, "the connection to the target server failed"),
    (r"is being accessed by other users|database \S+ already exists|could not obtain lock|deadlock detected"
     r"|lock timeout|canceling statement due to",
     LockedError, "another session got in the way"),
    (r"permission denied|must be (superuser|owner)", ConfigError, "the target login lacks a privilege"),
)


def environment_failure(exc: BackupError) -> Optional[BackupError]:
    """The error to raise instead of ``exc`` when a restore failed for its surroundings, not for the backup.

    None: the failure may be the backup's own (its archive or its content), so a check may call it bad.
    """
    text = str(exc).lower()
    for pattern, kind, why in _ENVIRONMENT:
        if re.search(pattern, text):
            return kind("%s: %s" % (why, exc), step=exc.step)
    return None
