# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Store interface: a flat key space under a root or prefix, streamed in and out.

Keys use ``/`` and mirror the backup directory (``full/<id>.dump.gz``, ``full/<id>.json``). The backup
directory itself is one store (store/local.py); a second directory, S3, Azure Blob and GCS are the
others. The one catalog (repo/catalog.py) lists, verifies, restores and prunes over any of them.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple

from ..core.errors import DestinationError

CHUNK = 1024 * 1024
_SECRET_PARAMS = re.compile(r"(?i)((?:sig|signature|se|sp|sv|skoid|sktid|x-amz-[a-z-]+|x-goog-[a-z-]+|token|"
                            r"key|access_token|credential)=)[^&\s\"']+")
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\s,]+(\s+[^\"'\s,]+)?")


def redact(text: str) -> str:
    """Query-string signatures, tokens and Authorization values replaced by ``***``."""
    text = _SECRET_PARAMS.sub(r"\1***", text)
    return _AUTH_HEADER.sub(r"\1***", text)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a client library's (often multi-line) error, redacted."""
    for line in str(exc).splitlines():
        if line.strip():
            return redact(line.strip())[:400]
    return type(exc).__name__


@dataclass
class ObjectInfo:
    """What the service reports about one object."""

    key: str
    size: int
    modified: Optional[datetime] = None
    etag: Optional[str] = None
    checksum: Optional[str] = None  # the service's own checksum where it reports one (e.g. "crc32c:...")
    metadata: Optional[Dict[str, str]] = None


class Store:
    """One place backups are kept: the backup directory, a second directory, S3, Azure Blob or GCS.

    Every operation streams (constant memory); ``write`` is atomic: the object appears whole or not at all.
    """

    kind = "abstract"
    role = "destination"  # how errors name the store: "destination 's3' (s3): upload ... failed: ..."

    def __init__(self, name: str) -> None:
        self.name = name

    # --- to implement -------------------------------------------------------------
    def uri(self, key: str = "") -> str:
        raise NotImplementedError

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        """Objects whose key starts with ``prefix``, sorted by key."""
        raise NotImplementedError

    def stat(self, key: str) -> Optional[ObjectInfo]:
        """None when the object does not exist."""
        raise NotImplementedError

    def read(self, key: str) -> Iterator[bytes]:
        """The object's bytes as a stream of chunks."""
        raise NotImplementedError

    def write(self, key: str, source: BinaryIO, size: int, sha256: str) -> ObjectInfo:
        """Store ``size`` bytes read from ``source`` (multipart/resumable for large ones, constant memory);
        atomic. ``sha256`` is kept as object metadata where the store has metadata."""
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> None:
        """A small object (a manifest), replaced atomically."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Idempotent: a missing object is not an error."""
        raise NotImplementedError

    def metadata(self, key: str) -> Optional[Dict[str, str]]:
        """User metadata of an object; None when the store keeps none (a directory)."""
        return None

    def local_path(self, key: str) -> Optional[str]:
        """The object as a file on this host (a directory store), else None: callers then stream."""
        return None

    def close(self) -> None:
        """Release clients (optional)."""

    # --- shared -------------------------------------------------------------------
    def head(self, key: str) -> Optional[ObjectInfo]:
        return self.stat(key)

    def open(self, key: str) -> BinaryIO:
        """A read-only file object over the object's stream (for consumers that want ``read(n)``)."""
        return io.BufferedReader(_ChunkReader(self.read(key)), CHUNK)  # type: ignore[arg-type]

    def put_file(self, key: str, path: str, size: int, sha256: str) -> ObjectInfo:
        try:
            handle = open(path, "rb")  # pylint: disable=consider-using-with
        except OSError as exc:
            raise self.error("upload", key, "cannot read %s: %s" % (path, exc.strerror)) from None
        with handle:
            return self.write(key, handle, size, sha256)

    def read_bytes(self, key: str, limit: int = 64 * 1024 * 1024) -> bytes:
        parts: List[bytes] = []
        total = 0
        for chunk in self.read(key):
            total += len(chunk)
            if total > limit:
                raise self.error("read", key, "object is larger than %d bytes" % limit)
            parts.append(bytes(chunk))
        return b"".join(parts)

    def sha256(self, key: str) -> Tuple[int, str]:
        """(size, sha256) of the object, streamed."""
        digest = hashlib.sha256()
        size = 0
        for chunk in self.read(key):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def error(self, action: str, key: str, detail: str) -> DestinationError:
        error = DestinationError("%s %r (%s): %s %s failed: %s" % (self.role, self.name, self.kind, action,
                                                                   self.uri(key), detail))
        error.detail = detail  # the bare cause, for callers that name the object themselves
        return error

    def describe(self) -> Dict[str, str]:
        return {"name": self.name, "type": self.kind, "uri": self.uri()}


class _ChunkReader(io.RawIOBase):
    """``readinto`` over an iterator of chunks: a stream becomes a file object without buffering it whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = bytes(next(self._chunks))
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


def join_key(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    key = key.lstrip("/")
    return "%s/%s" % (prefix, key) if prefix else key
