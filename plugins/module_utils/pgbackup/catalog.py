# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog: data files plus a manifest written last.

A data file without a manifest is an incomplete backup: never listed, restored or counted,
and removed by the next run (which holds the repository lock, so it cannot be in progress).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional

from .config import ALL_KINDS
from .errors import NotFound
from .fsutil import ensure_private_dir, remove_quietly, write_json_atomic
from .lock import RepositoryLock

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"
SUBDIRS = ("full", "incremental", "schema", "data", "globals", "logs")
_SLUG = re.compile(r"[^A-Za-z0-9_.]+")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def parse_moment(text: str, tz_name: str = "UTC") -> datetime:
    """ISO 8601 (``2026-11-24T13:00:00Z``, ``2026-11-24 13:00``); a time without offset is in ``tz_name``."""
    cleaned = text.strip().replace(" ", "T", 1)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise NotFound("time %r is not valid: use ISO 8601 such as 2026-11-24T13:00:00Z or '2026-11-24 13:00'"
                       % text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz_name))
    return moment


def zone(tz_name: str):
    """A tzinfo for an IANA name (UTC needs no tz database, so it works everywhere)."""
    if tz_name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo  # pylint: disable=import-outside-toplevel
        return ZoneInfo(tz_name)
    except Exception:  # pylint: disable=broad-except
        raise NotFound("time zone %r is not valid: use an IANA name such as UTC or Europe/Berlin" % tz_name) from None


def slug(name: str) -> str:
    """A file-name-safe rendering of a database name (the manifest keeps the real one)."""
    return _SLUG.sub("_", name).strip("_") or "db"


class Backup:
    """One manifested backup: the manifest document plus where it lives."""

    def __init__(self, manifest: Dict[str, Any], manifest_path: str) -> None:
        self.manifest = manifest
        self.manifest_path = manifest_path

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def kind(self) -> str:
        return self.manifest["type"]

    @property
    def database(self) -> str:
        return self.manifest.get("database", "")

    @property
    def created_at(self) -> datetime:
        return parse_iso(self.manifest["created_at"])

    @property
    def directory(self) -> str:
        return os.path.dirname(self.manifest_path)

    @property
    def good(self) -> bool:
        verification = self.manifest.get("verification") or {}
        return self.manifest.get("status") == "ok" and verification.get("ok", True) is not False

    def file_path(self, entry: Dict[str, Any]) -> str:
        return os.path.join(self.directory, entry["name"])

    def file(self, role: str) -> Optional[Dict[str, Any]]:
        for entry in self.manifest.get("files", []):
            if entry.get("role") == role:
                return entry
        return None

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.manifest.get("files", []))

    def summary(self) -> Dict[str, Any]:
        """The stable listing shape (``list --json`` and pg_backup_info)."""
        main = (self.manifest.get("files") or [{}])[0]
        return {
            "id": self.id,
            "type": self.kind,
            "database": self.database,
            "created_at": self.manifest["created_at"],
            "finished_at": self.manifest.get("finished_at"),
            "size": self.size,
            "sha256": main.get("sha256"),
            "compression": self.manifest.get("compression"),
            "encryption": self.manifest.get("encryption"),
            "server_version": (self.manifest.get("server") or {}).get("version"),
            "files": [self.file_path(f) for f in self.manifest.get("files", [])],
            "manifest": self.manifest_path,
            "verification": self.manifest.get("verification"),
            "good": self.good,
        }

    def save(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest)


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
        found.sort(key=lambda b: (b.manifest["created_at"], b.id))
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
            backup = load_backup(path)
            if backup is None:
                raise NotFound("%s is not a readable seawall manifest" % path)
            return backup
        directory, name = os.path.split(path)
        for candidate in os.listdir(directory) if os.path.isdir(directory) else []:
            if candidate.endswith(MANIFEST_SUFFIX):
                backup = load_backup(os.path.join(directory, candidate))
                if backup and any(f["name"] == name for f in backup.manifest.get("files", [])):
                    return backup
        raise NotFound("%s belongs to no complete backup (no manifest names it): it is not restorable" % path)

    def leftovers(self, backups: Optional[List[Backup]] = None) -> List[str]:
        """Files no manifest names: partial writes and data files of interrupted runs.

        ``backups``: the catalog as already read with include_bad=True (10,000 manifests are read once).
        A file named like a manifest this version cannot read (a newer format, say) is not a leftover:
        it may well belong to that manifest.
        """
        backups = self.backups(include_bad=True) if backups is None else backups
        named = {b.file_path(entry) for b in backups for entry in b.manifest.get("files", [])}
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


def load_backup(path: str) -> Optional[Backup]:
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if not all(k in manifest for k in ("id", "type", "created_at", "files")):
        return None
    return Backup(manifest, path)


def _bad_reason(backup: Backup) -> str:
    verification = backup.manifest.get("verification") or {}
    return verification.get("details") or backup.manifest.get("status", "unknown")
