# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks made before a restore touches anything: which tools, which server, where to run CREATE DATABASE."""

from __future__ import annotations

from typing import Optional

from ...config.connection import DbTarget
from ...core.errors import BackupError, ClientToolError, ConnectionFailed
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
                           % target.url)
