# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog: data files plus a manifest written last.

A data file without a manifest is an incomplete backup: never listed, restored or counted,
and removed by the next run (which holds the repository lock, so it cannot be in progress).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Iterator, List, Optional, Tuple

from ..config.settings import ALL_KINDS
from ..core.clock import iso
from ..core.errors import NotFound
from ..core.fsutil import ensure_private_dir, remove_quietly
from ..model.manifest import MANIFEST_SUFFIX, Backup, _bad_reason, check_backup, load_backup, slug
from .lock import RepositoryLock

SUBDIRS = ("full", "incremental", "schema", "data", "globals", "logs")


class Repository:
    """A local backup directory laid out as ``full/ schema/ data/ globals/ logs/``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def kind_dir(self, kind: str) -> str:
        return os.path.join(self.root, kind)

    @property
    def log_dir(self) -> str:
        return os.path.join(self.root, "logs")

    def prepare(self) -> None:
        ensure_private_dir(self.root)
        for sub in SUBDIRS:
            ensure_private_dir(os.path.join(self.root, sub))

    def lock(self, wait_seconds: float = 0) -> RepositoryLock:
        return RepositoryLock(os.path.join(self.root, ".lock"), wait_seconds)

    def new_id(self, kind: str, database: str, moment: datetime) -> str:
        base = "%s-%s-%s" % (kind, slug(database), moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        candidate, counter = base, 1
        while os.path.exists(os.path.join(self.kind_dir(kind), candidate + MANIFEST_SUFFIX)):
            counter += 1
            candidate = "%s-%d" % (base, counter)
        return candidate

    def manifest_path(self, kind: str, backup_id: str) -> str:
        return os.path.join(self.kind_dir(kind), backup_id + MANIFEST_SUFFIX)

    def _manifest_files(self) -> Iterator[str]:
        for kind in ALL_KINDS:
            directory = self.kind_dir(kind)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                if name.endswith(MANIFEST_SUFFIX) and not name.startswith("."):
                    yield os.path.join(directory, name)

    def backups(self, kind: Optional[str] = None, database: Optional[str] = None,
                include_bad: bool = False) -> List[Backup]:
        """Manifested backups, oldest first. Unreadable manifests are skipped, never trusted."""
        found = []
        for path in self._manifest_files():
            backup = load_backup(path)
            if backup is None:
                continue
            if kind and backup.kind != kind:
                continue
            if database and backup.database != database:
                continue
            if not include_bad and not backup.good:
                continue
            found.append(backup)
        found.sort(key=lambda b: (b.created_at, b.id))
        return found

    def invalid_manifests(self) -> List[Tuple[str, str]]:
        """(path, why) of every manifest ``backups()`` skips as unreadable or invalid."""
        found = []
        for path in self._manifest_files():
            backup, reason = check_backup(path)
            if backup is None:
                found.append((path, reason or "unreadable"))
        return found

    def find(self, selector: str, kind: Optional[str] = None, database: Optional[str] = None,
             allow_bad: bool = False) -> Backup:
        """An id, a manifest or data file path, or ``latest`` (of ``kind``, default full)."""
        if selector == "latest":
            chosen = self.backups(kind=kind or "full", database=database)
            if not chosen:
                raise NotFound("no good %s backup%s in %s" % (kind or "full", " of %s" % database if database else "",
                                                              self.root))
            return chosen[-1]
        if os.path.sep in selector or selector.endswith(MANIFEST_SUFFIX) or os.path.exists(selector):
            return self._find_by_path(selector)
        for backup in self.backups(include_bad=True):
            if backup.id == selector:
                if not backup.good and not allow_bad:
                    raise NotFound("backup %s is marked bad (%s)" % (selector, _bad_reason(backup)))
                return backup
        raise NotFound("no backup with id %r in %s (see 'seawall-pgbackup list')" % (selector, self.root))

    def newest_before(self, moment: datetime, kind: str = "full", database: Optional[str] = None) -> Backup:
        """The newest good backup of ``kind`` that started before ``moment``."""
        chosen = [b for b in self.backups(kind=kind, database=database) if b.created_at < moment]
        if not chosen:
            raise NotFound("no good %s backup%s before %s in %s" % (kind, " of %s" % database if database else "",
                                                                    iso(moment), self.root))
        return chosen[-1]

    def _find_by_path(self, path: str) -> Backup:
        path = os.path.abspath(path)
        if path.endswith(MANIFEST_SUFFIX):
            backup, reason = check_backup(path)
            if backup is None:
                raise NotFound("%s is not a readable seawall manifest: %s" % (path, reason))
            return backup
        directory, name = os.path.split(path)
        for candidate in os.listdir(directory) if os.path.isdir(directory) else []:
            if candidate.endswith(MANIFEST_SUFFIX):
                backup = load_backup(os.path.join(directory, candidate))
                if backup and any(f.name == name for f in backup.manifest.files):
                    return backup
        raise NotFound("%s belongs to no complete backup (no manifest names it): it is not restorable" % path)

    def leftovers(self, backups: Optional[List[Backup]] = None) -> List[str]:
        """Files no manifest names: partial writes and data files of interrupted runs.

        ``backups``: the catalog as already read with include_bad=True (10,000 manifests are read once).
        A file named like a manifest this version cannot read (a newer format, say) is not a leftover:
        it may well belong to that manifest.
        """
        backups = self.backups(include_bad=True) if backups is None else backups
        named = {b.file_path(entry) for b in backups for entry in b.manifest.files}
        readable = {b.manifest_path for b in backups}
        stray = []
        for kind in ALL_KINDS:
            directory = self.kind_dir(kind)
            if not os.path.isdir(directory):
                continue
            names = os.listdir(directory)
            foreign = [os.path.join(directory, n[:-len(MANIFEST_SUFFIX)]) for n in names
                       if n.endswith(MANIFEST_SUFFIX) and not n.startswith(".")
                       and os.path.join(directory, n) not in readable]
            for name in names:
                path = os.path.join(directory, name)
                if name.endswith(MANIFEST_SUFFIX) and not name.startswith("."):
                    continue
                if os.path.isfile(path) and path not in named and not _owned_by(path, foreign):
                    stray.append(path)
        return sorted(stray)

    def remove_leftovers(self) -> List[str]:
        """Call only while holding the lock."""
        removed = self.leftovers()
        for path in removed:
            remove_quietly(path)
        return removed


def _owned_by(path: str, stems: List[str]) -> bool:
    """Whether ``path`` is ``<stem>.<anything>`` for one of ``stems``."""
    return any(path.startswith(stem + ".") for stem in stems)
