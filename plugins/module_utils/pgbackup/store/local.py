# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory as a destination (a second disk, an NFS or SMB mount): same keys as the clouds."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from typing import Iterator, List, Optional

from ..core.fsutil import create_private, ensure_private_dir, fsync_dir
from .base import CHUNK, Destination, ObjectInfo


class LocalDestination(Destination):
    kind = "local"

    def __init__(self, name: str, root: str) -> None:
        super().__init__(name)
        self.root = os.path.abspath(root)

    def _path(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise self.error("resolve", key, "key %r leaves the destination" % key)
        return os.path.join(self.root, *parts)

    def uri(self, key: str = "") -> str:
        return "file://" + (os.path.join(self.root, *key.split("/")) if key else self.root)

    def put_file(self, key: str, path: str, size: int, sha256: str) -> ObjectInfo:
        target = self._path(key)
        self._write(target, path)
        return self.head(key) or ObjectInfo(key, size)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        ensure_private_dir(os.path.dirname(target))
        temp = target + ".partial"
        try:
            with create_private(temp) if not os.path.exists(temp) else open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
            fsync_dir(os.path.dirname(target))
        except OSError as exc:
            raise self.error("write", key, exc.strerror or str(exc)) from None

    def _write(self, target: str, source: str) -> None:
        ensure_private_dir(os.path.dirname(target))
        temp = target + ".partial"
        try:
            if os.path.exists(temp):
                os.unlink(temp)
            with open(source, "rb") as src, create_private(temp) as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temp, target)
            fsync_dir(os.path.dirname(target))
        except OSError as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise self.error("upload", os.path.relpath(target, self.root), exc.strerror or str(exc)) from None

    def read(self, key: str) -> Iterator[bytes]:
        try:
            handle = open(self._path(key), "rb")
        except OSError as exc:
            raise self.error("read", key, exc.strerror or str(exc)) from None
        with handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    return
                yield chunk

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        found: List[ObjectInfo] = []
        if not os.path.isdir(self.root):
            return found
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                path = os.path.join(directory, name)
                key = os.path.relpath(path, self.root).replace(os.sep, "/")
                if key.startswith(prefix) and not name.endswith(".partial"):
                    info = self._info(key, path)
                    if info:
                        found.append(info)
        return sorted(found, key=lambda i: i.key)

    def _info(self, key: str, path: str) -> Optional[ObjectInfo]:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc))

    def head(self, key: str) -> Optional[ObjectInfo]:
        return self._info(key, self._path(key))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.error("delete", key, exc.strerror or str(exc)) from None
