# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup's manifest: the record written last that says which files make the backup."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import Any, Dict, Optional

from ..core.clock import parse_iso
from ..core.fsutil import write_json_atomic

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"
_SLUG = re.compile(r"[^A-Za-z0-9_.]+")


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


def load_backup(path: str) -> Optional[Backup]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return parse_backup(data, path)


def parse_backup(data: bytes, location: str) -> Optional[Backup]:
    """A manifest's bytes as read from any store; None when this version cannot trust them."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if not all(k in manifest for k in ("id", "type", "created_at", "files")):
        return None
    return Backup(manifest, location)


def _bad_reason(backup: Backup) -> str:
    verification = backup.manifest.get("verification") or {}
    return verification.get("details") or backup.manifest.get("status", "unknown")
