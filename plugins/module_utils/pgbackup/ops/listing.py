# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup listing of ``seawall-pgbackup list`` and ``pg_backup_info``: good backups, oldest first."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..config.settings import PHYSICAL_KINDS, Config
from ..model.manifest import Backup
from ..repo.catalog import open_repository

CHAIN_LIMIT = 10000  # a longer chain of parents is a loop in crafted manifests


def chain_of(backup: Backup, by_id: Dict[str, Backup]) -> Tuple[List[str], Optional[str]]:
    """The ids of ``backup``'s chain, its base first, and why it cannot be restored (None when every link is
    present and good and it starts with a base backup)."""
    chain = [backup.id]
    current = backup
    problem = None if backup.good else "%s is not good" % backup.id
    while current.manifest.parent:
        parent = by_id.get(current.manifest.parent)
        if parent is None or parent.id in chain or len(chain) > CHAIN_LIMIT:
            chain.insert(0, current.manifest.parent)
            return chain, problem or "%s is missing" % current.manifest.parent
        chain.insert(0, parent.id)
        if problem is None and not parent.good:
            problem = "%s is not good" % parent.id
        current = parent
    if problem is None and current.kind != "base":
        problem = "%s is not a base backup" % current.id
    return chain, problem


def add_chains(rows: List[Dict[str, Any]], backups: List[Backup]) -> None:
    """``chain`` (ids, base first) and ``chain_problem`` on the rows of physical backups."""
    by_id: Dict[str, Backup] = {}
    for backup in backups:
        by_id.setdefault(backup.id, backup)
    for row in rows:
        backup = by_id.get(row.get("id") or "")
        if backup is None or backup.kind not in PHYSICAL_KINDS:
            continue
        row["chain"], row["chain_problem"] = chain_of(backup, by_id)


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
    A base or incremental backup's row has its ``chain`` (ids, base first) and ``chain_problem`` (None when
    every link is present and good).
    """
    repo = open_repository(cfg, destination)
    rows = []
    for backup in repo.backups(kind=kind, database=database, include_bad=include_bad):
        row = repo.summary(backup)
        if not backup.good:
            row["reason"] = backup.bad_reason
        rows.append(row)
    if any(row["type"] in PHYSICAL_KINDS for row in rows):  # the chains, through links of any kind and database
        add_chains(rows, repo.backups(include_bad=True))
    if newest_only:
        return newest_per_type(rows)
    if include_bad and database is None:
        rows.extend({"id": None, "type": None, "database": None, "created_at": None, "size": None,
                     "manifest": where, "good": False, "reason": "invalid manifest: %s" % why}
                    for where, why in repo.invalid_manifests()
                    if not kind or "/%s/" % kind in "/" + where.replace("\\", "/"))
    return rows
