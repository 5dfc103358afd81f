# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Destination interface: a flat key space under a prefix, streamed in and out.

Keys are relative to the destination's prefix and use ``/`` (``full/<id>.dump.gz``,
``full/<id>.json``), mirroring the local backup directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Iterator, List, Optional

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


class Destination:
    """One place backups are copied to. Implementations: local, s3, azure, gcs."""

    kind = "abstract"

    def __init__(self, name: str) -> None:
        self.name = name

    # --- to implement -------------------------------------------------------------
    def uri(self, key: str = "") -> str:
        raise NotImplementedError

    def put_file(self, key: str, path: str, size: int, sha256: str) -> ObjectInfo:
        """Upload a local file (multipart/resumable for large ones, constant memory); atomic: the object
        appears whole or not at all. ``sha256`` is stored as object metadata."""
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> None:
        """A small object (a manifest), overwriting."""
        raise NotImplementedError

    def read(self, key: str) -> Iterator[bytes]:
        """The object's bytes as a stream of chunks."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        raise NotImplementedError

    def head(self, key: str) -> Optional[ObjectInfo]:
        """None when the object does not exist."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Idempotent: a missing object is not an error."""
        raise NotImplementedError

    def close(self) -> None:
        """Release clients (optional)."""

    # --- shared -------------------------------------------------------------------
    def read_bytes(self, key: str, limit: int = 64 * 1024 * 1024) -> bytes:
        parts: List[bytes] = []
        total = 0
        for chunk in self.read(key):
            total += len(chunk)
            if total > limit:
                raise self.error("read", key, "object is larger than %d bytes" % limit)
            parts.append(bytes(chunk))
        return b"".join(parts)

    def error(self, action: str, key: str, detail: str) -> DestinationError:
        return DestinationError("destination %r (%s): %s %s failed: %s" % (self.name, self.kind, action,
                                                                           self.uri(key), detail))

    def describe(self) -> Dict[str, str]:
        return {"name": self.name, "type": self.kind, "uri": self.uri()}


def join_key(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    key = key.lstrip("/")
    return "%s/%s" % (prefix, key) if prefix else key
