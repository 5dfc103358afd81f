# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup's manifest: the record written last that says which files make the backup.

The repository is untrusted input (docs/DESIGN.md section 10): a manifest is parsed and validated once,
when it is read, into a ``Manifest``; every path the engine derives from it comes from an id and file
names checked here against our own naming. Everything else reads attributes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

from ..core.clock import iso
from ..core.fsutil import write_json_atomic
from .record import Fail, Record, RecordError

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"
_SLUG = re.compile(r"[^A-Za-z0-9_.]+")
# <kind>-<slug>-<YYYYMMDDTHHMMSSZ>[-N]: what Repository.new_id makes (a slug holds no "-").
ID_PATTERN = re.compile(r"^(?P<kind>[a-z]+)-(?P<slug>[A-Za-z0-9_.]+)-(?P<stamp>[0-9]{8}T[0-9]{6}Z)(?:-[1-9][0-9]*)?$")
KIND_PATTERN = re.compile(r"^[a-z]+$")
LSN_PATTERN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")  # "0/2000028", as PostgreSQL prints an LSN
# Encryption formats whose files are bound to their backup: codec/crypto.BOUND_FORMATS (the model sits below
# codec, so the names are repeated here; tests/unit/test_binding.py checks they agree).
BOUND_ENCRYPTION_FORMATS = frozenset({"seawall-aes-256-gcm-chunked-v2", "age-encryption.org/v1+seawall-binding-v1"})


class ManifestError(RecordError):
    """A manifest that cannot be trusted: unreadable, of another format version, or with a wrong field."""

    step = "manifest"


def slug(name: str) -> str:
    """A file-name-safe rendering of a database name (the manifest keeps the real one)."""
    return _SLUG.sub("_", name).strip("_") or "db"


def id_problem(backup_id: str) -> Optional[str]:
    """Why ``backup_id`` is not one of our ids, or None."""
    if not ID_PATTERN.match(backup_id):
        return "%r is not a backup id (<kind>-<database>-<YYYYMMDDTHHMMSSZ>[-N])" % backup_id[:80]
    return None


@dataclass
class Encryption(Record):
    """How the files are sealed: algorithm and key id(s), never key material."""

    algorithm: str
    format: Optional[str] = None
    key_id: Optional[str] = None
    key_ids: Optional[List[str]] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"algorithm"})
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset({"key_ids"})


@dataclass
class Auth(Record):
    """The manifest's signature (codec/authn.py): an HMAC under the repository key, or an Ed25519 signature."""

    algorithm: str
    key_id: str
    value: str
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"algorithm", "key_id", "value"})


@dataclass
class FileEntry(Record):
    """One stored file of a backup (``name`` is relative to the manifest's directory)."""

    name: str
    size: int
    sha256: str
    role: Optional[str] = None
    format: Optional[str] = None
    compression: Optional[str] = None
    raw_size: Optional[int] = None
    encryption: Optional[Encryption] = None  # a per-file override of the manifest's encryption
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"name", "size", "sha256"})
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset({"encryption"})

    def check(self, where: str, fail: Fail) -> None:
        if self.size < 0:
            raise fail("%s.size is negative (%d)" % (where, self.size))
        if self.raw_size is not None and self.raw_size < 0:
            raise fail("%s.raw_size is negative (%d)" % (where, self.raw_size))


@dataclass
class Verification(Record):
    """The last verification of a backup (or of its copy at a destination)."""

    level: str
    at: datetime
    ok: bool
    details: Optional[str] = None
    duration_seconds: Optional[float] = None
    rto_seconds: Optional[float] = None
    destination: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"level", "at", "ok"})
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset({"rto_seconds", "destination", "duration_seconds"})


@dataclass
class Copy(Record):
    """A copy of the backup at a destination (or its removal there by the destination's retention)."""

    destination: str
    type: Optional[str] = None
    uri: Optional[str] = None
    copied_at: Optional[datetime] = None
    removed_at: Optional[datetime] = None
    reason: Optional[str] = None
    key_id: Optional[str] = None  # the key the copied files were encrypted under (a rekey makes the copy stale)
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"destination"})
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset({"type", "uri", "copied_at", "removed_at", "reason", "key_id"})


@dataclass
class Rekeying(Record):
    """One re-encryption of the backup's files (``rekey``)."""

    at: datetime
    from_key: Optional[str] = None
    to_key: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"at"})
    KEYS: ClassVar[Dict[str, str]] = {"from_key": "from", "to_key": "to"}


@dataclass
class Tool(Record):
    name: Optional[str] = None
    version: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)


@dataclass
class Source(Record):
    """The database the backup was taken from (the URL never carries a password)."""

    url: Optional[str] = None
    user: Optional[str] = None
    superuser: Optional[bool] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)


@dataclass
class SourceServer(Record):
    """The source server at backup time."""

    version: Optional[str] = None
    version_num: Optional[int] = None
    major: Optional[int] = None
    system_identifier: Optional[str] = None
    encoding: Optional[str] = None
    collate: Optional[str] = None
    ctype: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)


@dataclass
class ClientInfo(Record):
    """The client tools (pg_dump) that wrote the backup."""

    version: Optional[str] = None
    major: Optional[int] = None
    bin_dir: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)


@dataclass
class GlobalsInfo(Record):
    """What the cluster globals dump holds (role passwords need a superuser)."""

    role_passwords: Optional[bool] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)


@dataclass
class Manifest(Record):
    """The manifest document (format version 1), as ``ops/backup.py`` writes it."""

    id: str
    kind: str
    created_at: datetime
    files: List[FileEntry]
    format_version: int = FORMAT_VERSION
    method: Optional[str] = None
    status: Optional[str] = None
    database: str = ""
    finished_at: Optional[datetime] = None
    duration_seconds: Optional[float] = None
    host: Optional[str] = None
    tool: Optional[Tool] = None
    source: Optional[Source] = None
    server: Optional[SourceServer] = None
    client: Optional[ClientInfo] = None
    compression: Optional[str] = None
    encryption: Optional[Encryption] = None
    parent: Optional[str] = None
    start_lsn: Optional[str] = None   # physical backups: the WAL range they need (backup_manifest WAL-Ranges)
    stop_lsn: Optional[str] = None
    timeline: Optional[int] = None
    incremental: Optional[str] = None  # an incremental's method: "native" (pg_basebackup) or "wal" (ops/incremental)
    user_objects: Optional[int] = None
    database_size: Optional[int] = None
    table_rows: Optional[Dict[str, int]] = None
    database_sql: Optional[List[str]] = None
    globals: Optional[GlobalsInfo] = None
    warnings: List[str] = field(default_factory=list)
    verification: Optional[Verification] = None
    copies: List[Copy] = field(default_factory=list)
    rekeyed: List[Rekeying] = field(default_factory=list)
    repository: Optional[str] = None  # the repository id (BACKUP_REPOSITORY_ID), signed and bound into each file
    sealed: Optional[str] = None      # at a destination: the describing fields, encrypted (codec/sealed.py)
    auth: Optional[Auth] = None       # the signature over everything else (codec/authn.py)
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    present: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset({"format_version", "id", "type", "created_at", "files"})
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset({"copies", "rekeyed", "repository", "sealed", "auth",
                                                    "start_lsn", "stop_lsn", "timeline", "incremental"})
    KEYS: ClassVar[Dict[str, str]] = {"kind": "type"}
    ERROR = ManifestError
    LABEL = "manifest"

    @classmethod
    def parse(cls, document: Any, where: str, fail: Fail) -> "Manifest":
        # The version first: a newer format is refused as such, not as a list of odd fields.
        if isinstance(document, dict) and "format_version" in document:
            version = document["format_version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise fail("format_version must be an integer, not %r" % (version,))
            if version != FORMAT_VERSION:
                raise fail("format_version %d is not readable by this version (it reads %d)"
                           % (version, FORMAT_VERSION))
        return super().parse(document, where, fail)  # type: ignore[return-value]

    def check(self, where: str, fail: Fail) -> None:
        if not KIND_PATTERN.match(self.kind):
            raise fail("type %r is not a backup kind" % self.kind[:40])
        problem = id_problem(self.id)
        if problem:
            raise fail("id %s" % problem)
        if ID_PATTERN.match(self.id).group("kind") != self.kind:  # type: ignore[union-attr]
            raise fail("id %r does not belong to a %s backup" % (self.id, self.kind))
        for name, lsn in (("start_lsn", self.start_lsn), ("stop_lsn", self.stop_lsn)):
            if lsn is not None and not LSN_PATTERN.match(lsn):
                raise fail("%s %r is not an LSN (like 0/2000028)" % (name, lsn[:40]))
        if self.incremental not in (None, "native", "wal"):
            raise fail("incremental %r is not an incremental method (native or wal)" % self.incremental[:40])
        if self.timeline is not None and self.timeline < 1:
            raise fail("timeline is not positive (%d)" % self.timeline)
        if self.parent is not None and id_problem(self.parent):
            raise fail("parent %s" % id_problem(self.parent))
        seen = set()
        for index, entry in enumerate(self.files):
            problem = name_problem(self.id, entry.name)
            if problem:
                raise fail("files[%d].name %s" % (index, problem))
            if entry.name in seen:
                raise fail("files[%d].name %r is listed twice" % (index, entry.name))
            seen.add(entry.name)
        for name, value in (("duration_seconds", self.duration_seconds), ("user_objects", self.user_objects),
                            ("database_size", self.database_size)):
            if value is not None and value < 0:
                raise fail("%s is negative (%s)" % (name, value))

    # ------------------------------------------------------------------ reading
    def file(self, role: str) -> Optional[FileEntry]:
        for entry in self.files:
            if entry.role == role:
                return entry
        return None

    def encryption_of(self, entry: FileEntry) -> Optional[Encryption]:
        """The sealing of one file: its own when it names one, else the backup's."""
        return entry.encryption if entry.encryption is not None else self.encryption

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def name_problem(backup_id: str, name: str) -> Optional[str]:
    """Why ``name`` is not a file name of backup ``backup_id`` (``<id>.<suffix>``, a plain name), or None."""
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or os.path.isabs(name):
        return "%r is not a plain file name" % name[:80]
    if not name.startswith(backup_id + "."):
        return "%r does not start with the backup id %s" % (name[:80], backup_id)
    if name == backup_id + MANIFEST_SUFFIX:
        return "%r is the manifest itself" % name
    return None


class Backup:
    """One manifested backup: the parsed manifest plus where it lives."""

    def __init__(self, manifest: Union[Manifest, Mapping[str, Any]], manifest_path: str) -> None:
        if not isinstance(manifest, Manifest):
            manifest = Manifest.from_dict(dict(manifest), manifest_path)
        self.manifest: Manifest = manifest
        self.manifest_path = manifest_path

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def database(self) -> str:
        return self.manifest.database

    @property
    def created_at(self) -> datetime:
        return self.manifest.created_at

    @property
    def directory(self) -> str:
        return os.path.dirname(self.manifest_path)

    @property
    def good(self) -> bool:
        verification = self.manifest.verification
        return self.manifest.status == "ok" and not (verification is not None and verification.ok is False)

    @property
    def bad_reason(self) -> str:
        """Why a backup is not good: the failed verification's details, or its status."""
        verification = self.manifest.verification
        return (verification.details if verification else None) or self.manifest.status or "unknown"

    def file_path(self, entry: Union[FileEntry, str]) -> str:
        return os.path.join(self.directory, entry if isinstance(entry, str) else entry.name)

    def file(self, role: str) -> Optional[FileEntry]:
        return self.manifest.file(role)

    @property
    def size(self) -> int:
        return self.manifest.size

    def summary(self) -> Dict[str, Any]:
        """The stable listing shape (``list --json`` and pg_backup_info)."""
        manifest = self.manifest
        main = manifest.files[0] if manifest.files else None
        return {
            "id": self.id,
            "type": self.kind,
            "database": self.database,
            "created_at": iso(manifest.created_at),
            "finished_at": iso(manifest.finished_at) if manifest.finished_at else None,
            "size": self.size,
            "sha256": main.sha256 if main else None,
            "compression": manifest.compression,
            "encryption": manifest.encryption.to_dict() if manifest.encryption else None,
            "server_version": manifest.server.version if manifest.server else None,
            "files": [self.file_path(f) for f in manifest.files],
            "manifest": self.manifest_path,
            "verification": manifest.verification.to_dict() if manifest.verification else None,
            "good": self.good,
            "legacy_format": self.legacy_format,
            "signed_by": manifest.auth.key_id if manifest.auth else None,
            "method": manifest.method,
            "start_lsn": manifest.start_lsn,
            "stop_lsn": manifest.stop_lsn,
            "timeline": manifest.timeline,
            "parent": manifest.parent,
            "incremental": manifest.incremental,
        }

    @property
    def legacy_format(self) -> bool:
        """Encrypted in the old format whose files are not bound to their backup (``rekey`` rewrites them)."""
        manifest = self.manifest
        sealings = [manifest.encryption_of(f) for f in manifest.files] or [manifest.encryption]
        return any(e is not None and e.format not in BOUND_ENCRYPTION_FORMATS for e in sealings)

    def save(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest.to_dict())


def decode_manifest(data: bytes, source: str) -> Any:
    """The JSON document of a manifest's bytes; raises ManifestError."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError("%s: not valid JSON: %s" % (source, exc)) from None


def parse_manifest_bytes(data: bytes, source: str) -> Manifest:
    """A manifest from its JSON bytes (a file or an object at a destination); raises ManifestError."""
    return Manifest.from_dict(decode_manifest(data, source), source)


def parse_backup_bytes(data: bytes, location: str) -> Backup:
    """The backup whose manifest, read from any store at ``location``, is ``data``; raises ManifestError."""
    return backup_from_document(decode_manifest(data, location), location)


def backup_from_document(document: Any, location: str) -> Backup:
    """The backup of a decoded manifest document found at ``location``; raises ManifestError."""
    manifest = Manifest.from_dict(document, location)
    name = re.split(r"[\\/]", location)[-1]
    if name != manifest.id + MANIFEST_SUFFIX:
        raise ManifestError("%s: the manifest of %s is not named %s%s"
                            % (location, manifest.id, manifest.id, MANIFEST_SUFFIX))
    return Backup(manifest, location)


def parse_backup(data: bytes, location: str) -> Optional[Backup]:
    """The backup, or None when this version cannot trust the manifest's bytes (``parse_backup_bytes`` says why)."""
    try:
        return parse_backup_bytes(data, location)
    except ManifestError:
        return None


def read_backup(path: str) -> Backup:
    """The backup whose manifest is ``path``; raises ManifestError saying why it cannot be trusted."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ManifestError("%s: cannot be read: %s" % (path, exc.strerror or exc)) from None
    return parse_backup_bytes(data, path)


def check_backup(path: str) -> Tuple[Optional[Backup], Optional[str]]:
    """(the backup, None) or (None, why its manifest cannot be trusted, without the path)."""
    try:
        return read_backup(path), None
    except ManifestError as exc:
        message = str(exc)
        return None, message[len(path) + 2:] if message.startswith(path + ": ") else message


def load_backup(path: str) -> Optional[Backup]:
    """The backup, or None for an unreadable or invalid manifest (``check_backup`` says why)."""
    return check_backup(path)[0]


def _bad_reason(backup: Backup) -> str:
    return backup.bad_reason
