# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical base backups: the pg_basebackup command, its tar stream, its backup_manifest, safe extraction.

pg_basebackup writes ONE tar to stdout (``-D - -Ft -X fetch``) on PostgreSQL 15 and 18 alike: the data
directory, the WAL needed to reach consistency (``pg_wal/``, fetched at the end) and the backup_manifest
(the last member). Streaming it through our compression/encryption pipeline means no second copy on disk
and no scratch directory to clean up after a kill; ``-X stream`` cannot write to stdout. The cost of
``fetch``: WAL recycled during a very long backup makes pg_basebackup fail (never a silent gap).

The stored tar is untrusted input when read back: ``extract_tar`` writes only plain files and directories
below its destination (no absolute names, no ``..``, no links, devices or fifos, no name twice).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, List, Optional, Tuple

from ..config.connection import DbTarget
from ..core.errors import BackupError, ConfigError, VerifyError
from .binaries import ClientTools

BLOCK = 512
MANIFEST_MEMBER = "backup_manifest"
MANIFEST_LIMIT = 256 * 1024 * 1024  # a backup_manifest is ~200 bytes per file of the cluster
_LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
# What the server says when the role or pg_hba.conf does not allow a replication connection.
_REFUSED = ("must be superuser or replication role", "permission denied to start wal sender",
            "no pg_hba.conf entry for replication connection", "must have the replication attribute",
            "permission denied for replication")


def basebackup_command(tools: ClientTools, target: DbTarget, label: str) -> List[str]:
    """pg_basebackup of the whole cluster as one tar on stdout, WAL and backup_manifest included."""
    return [tools.path("pg_basebackup"), "--dbname=" + target.url, "--no-password", "--pgdata=-",
            "--format=tar", "--wal-method=fetch", "--checkpoint=fast", "--manifest-checksums=SHA256",
            "--label=" + label]


def replication_refused(error: BackupError, user: str) -> Optional[ConfigError]:
    """A one-line ConfigError when ``error`` is the server refusing a replication connection, else None."""
    text = str(error)
    if not any(phrase in text.lower() for phrase in _REFUSED):
        return None
    return ConfigError("a base backup needs a replication connection: role %s needs REPLICATION (or superuser) "
                       "and a pg_hba.conf 'replication' entry: %s" % (user or "?", text))


def summaries_refused(error: BackupError) -> Optional[ConfigError]:
    if "summarization" not in str(error).lower():
        return None
    return ConfigError("incremental backups need summarize_wal = on on the server (PostgreSQL 17+; a reload "
                       "applies it), then a base backup taken after it: %s" % error)


def tablespace_refused(error: BackupError) -> Optional[ConfigError]:
    if "single tablespace" not in str(error):
        return None
    return ConfigError("base backups of clusters with tablespaces other than pg_default/pg_global are not "
                       "supported yet: %s" % error)


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


class TarScanner:
    """Follows a tar stream chunk by chunk and keeps the top-level ``backup_manifest`` member's bytes."""

    def __init__(self, keep: str = MANIFEST_MEMBER) -> None:
        self.keep = keep
        self.kept: Optional[bytes] = None
        self.members = 0
        self.ended = False
        self._buf = b""
        self._skip = 0          # bytes of the current member (and padding) still to pass
        self._capture: Optional[bytearray] = None
        self._capture_left = 0

    def feed(self, chunk: bytes) -> None:
        data = memoryview(chunk)
        while len(data) and not self.ended:
            if self._skip:
                take = min(self._skip, len(data))
                if self._capture is not None and self._capture_left:
                    part = min(take, self._capture_left)
                    self._capture += data[:part]
                    self._capture_left -= part
                    if not self._capture_left:
                        self.kept = bytes(self._capture)
                        self._capture = None
                self._skip -= take
                data = data[take:]
                continue
            need = BLOCK - len(self._buf)
            self._buf += bytes(data[:need])
            data = data[need:]
            if len(self._buf) < BLOCK:
                return
            header, self._buf = self._buf, b""
            self._header(header)

    def _header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self.ended = True
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        size = _octal(header[124:136])
        kind = header[156:157]
        self.members += 1
        self._skip = (size + BLOCK - 1) // BLOCK * BLOCK
        if name.lstrip("./") == self.keep and kind in (b"0", b"\0") and size <= MANIFEST_LIMIT:
            self._capture = bytearray()
            self._capture_left = size
            if not size:
                self.kept = b""
                self._capture = None


@dataclass
class WalRange:
    start_lsn: str
    stop_lsn: str
    timeline: int


def parse_lsn(text: str) -> int:
    if not isinstance(text, str) or not _LSN.match(text.upper()):
        raise ValueError("%r is not an LSN" % (text,))
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse_backup_manifest(data: Optional[bytes]) -> WalRange:
    """The WAL range a base backup needs, from its backup_manifest (``WAL-Ranges``); raises BackupError."""
    if not data:
        raise BackupError("pg_basebackup output rejected: no backup_manifest in the tar", step="backup")
    try:
        document = json.loads(data.decode("utf-8"))
        ranges = document["WAL-Ranges"]
        if not isinstance(ranges, list) or not ranges:
            raise ValueError("WAL-Ranges is empty")
        first, last = ranges[0], ranges[-1]
        start, stop, timeline = first["Start-LSN"], last["End-LSN"], last["Timeline"]
        if parse_lsn(stop) < parse_lsn(start):
            raise ValueError("End-LSN %s is before Start-LSN %s" % (stop, start))
        if not isinstance(timeline, int) or isinstance(timeline, bool) or timeline < 1:
            raise ValueError("Timeline %r is not a timeline" % (timeline,))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError("pg_basebackup output rejected: its backup_manifest cannot be read: %s" % exc,
                          step="backup") from None
    return WalRange(start.upper(), stop.upper(), timeline)


def check_base_tar(head: bytes, tail: bytes, raw_size: int) -> Optional[str]:
    if raw_size == 0:
        return "the base backup is empty"
    if len(head) < BLOCK or head[257:262] != b"ustar":
        return "the base backup is not a tar archive"
    if len(tail) < 2 * BLOCK or tail[-2 * BLOCK:] != b"\0" * 2 * BLOCK:
        return "the base backup is truncated (no tar end marker)"
    return None


def _member_problem(member: tarfile.TarInfo) -> Optional[str]:
    name = member.name
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    if "\0" in name:
        return "a NUL byte"
    if not (member.isreg() or member.isdir()):
        return "not a plain file or directory (links, devices and fifos are refused)"
    return None


def extract_tar(stream: BinaryIO, dest: str, label: str, error=VerifyError) -> Tuple[int, int]:
    """Extract the tar read from ``stream`` (untrusted) into the existing directory ``dest``.

    Directories 0700 and files 0600 of the current user; raises ``error`` naming the first hostile member.
    Returns (files, bytes) written.
    """
    files = size = 0
    root = os.path.realpath(dest)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                problem = _member_problem(member)
                if problem:
                    raise error("%s: member %r is refused: %s" % (label, member.name[:120], problem))
                rel = os.path.normpath("/".join(p for p in member.name.replace("\\", "/").split("/")
                                                if p not in ("", ".")) or ".")
                path = os.path.join(root, rel)
                if os.path.commonpath([root, os.path.realpath(path)]) != root:
                    raise error("%s: member %r is refused: it leads outside" % (label, member.name[:120]))
                if member.isdir():
                    if rel != ".":
                        os.makedirs(path, mode=0o700, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                source = archive.extractfile(member)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
                try:
                    fd = os.open(path, flags, 0o600)
                except FileExistsError:
                    raise error("%s: member %r is refused: its name comes twice" % (label, member.name[:120])) from None
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: source.read(1 << 20), b""):  # type: ignore[union-attr]
                        out.write(chunk)
                        size += len(chunk)
                files += 1
    except tarfile.TarError as exc:
        raise error("%s is not a readable tar archive: %s" % (label, exc)) from None
    return files, size
