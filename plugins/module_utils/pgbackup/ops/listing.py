# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup listing of ``seawall-pgbackup list`` and ``pg_backup_info``: good backups, oldest first."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..config.settings import Config
from ..repo.catalog import open_repository


def newest_per_type(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The newest row of each type (``rows`` oldest first), oldest first."""
    newest: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        newest[row["type"]] = row
    return sorted(newest.values(), key=lambda row: (row["created_at"], row["id"]))


def list_backups(cfg: Config, kind: Optional[str] = None, database: Optional[str] = None,
                 include_bad: bool = False, newest_only: bool = False,
                 destination: Optional[str] = None) -> List[Dict[str, Any]]:
    """Summaries of the backups in the backup directory, or of the copies at ``destination``.

    ``include_bad``: also the backups that are not good, each with its ``reason`` (a failed verification,
    a missing object, an unfinished status), and then every manifest that cannot be read or is not valid
    (``id`` None, ``manifest`` where it is, ``reason`` why): never acted on, but shown.
    """
    repo = open_repository(cfg, destination)
    rows = []
    for backup in repo.backups(kind=kind, database=database, include_bad=include_bad):
        row = repo.summary(backup)
        if not backup.good:
            row["reason"] = backup.bad_reason
        rows.append(row)
    if newest_only:
        return newest_per_type(rows)
    if include_bad and database is None:
        rows.extend({"id": None, "type": None, "database": None, "created_at": None, "size": None,
                     "manifest": where, "good": False, "reason": "invalid manifest: %s" % why}
                    for where, why in repo.invalid_manifests()
                    if not kind or "/%s/" % kind in "/" + where.replace("\\", "/"))
    return rows
