# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory as a store: the backup directory itself, or a second disk, an NFS or SMB mount.

Writes go to ``<key>.partial`` (private, fsynced) and are renamed into place, then the directory is
fsynced: an object appears whole or not at all. A ``.partial`` left by a crash is listed like any other
object, so the catalog sees it as a leftover and cleanup removes it after the grace period.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import datetime, timezone
from typing import BinaryIO, Iterator, List, Optional

from ..core.fsutil import create_private, ensure_private_dir, fsync_dir, open_read_nofollow
from .base import CHUNK, ObjectInfo, Store

TEMP_SUFFIX = ".partial"


class LocalStore(Store):
    kind = "local"

    def __init__(self, name: str, root: str, role: str = "destination") -> None:
        super().__init__(name)
        self.root = os.path.abspath(root)
        self.role = role

    def _path(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            raise self.error("resolve", key, "key %r leaves the destination" % key)
        # Never through a symlinked folder (``full -> /elsewhere``): a planted link must not carry a read,
        # write or delete out of the root. The root itself is configured and may be a link.
        folder = self.root
        for part in parts[:-1]:
            folder = os.path.join(folder, part)
            if os.path.islink(folder):
                raise self.error("resolve", key, "%s is a symbolic link: refusing to follow it" % folder)
        return os.path.join(self.root, *parts)

    def local_path(self, key: str) -> Optional[str]:
        return self._path(key)

    def uri(self, key: str = "") -> str:
        return "file://" + (os.path.join(self.root, *key.split("/")) if key else self.root)

    def write(self, key: str, source: BinaryIO, size: int, sha256: str) -> ObjectInfo:
        target = self._path(key)
        self._replace(key, target, lambda handle: shutil.copyfileobj(source, handle, CHUNK), "upload")
        return self.stat(key) or ObjectInfo(key, size)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._replace(key, self._path(key), lambda handle: handle.write(data), "write")

    def _replace(self, key: str, target: str, fill, action: str) -> None:
        temp = target + TEMP_SUFFIX
        try:
            folder = os.path.dirname(target)
            if folder != self.root:
                ensure_private_dir(self.root, follow=True)
            ensure_private_dir(folder, follow=folder == self.root)
            if os.path.lexists(temp):  # a crashed write's, or a planted link: removed, never written through
                os.unlink(temp)
            with create_private(temp) as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
            fsync_dir(os.path.dirname(target))
        except OSError as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise self.error(action, key, exc.strerror or str(exc)) from None

    def read(self, key: str) -> Iterator[bytes]:
        try:
            handle = open_read_nofollow(self._path(key))
        except OSError as exc:
            raise self.error("read", key, exc.strerror or str(exc)) from None
        with handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    return
                yield chunk

    def open(self, key: str) -> BinaryIO:
        try:
            return open_read_nofollow(self._path(key))
        except OSError as exc:
            raise self.error("read", key, exc.strerror or str(exc)) from None

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        found: List[ObjectInfo] = []
        # Walk only the folder the prefix names (``full/``): the backup directory also holds logs and scratch.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(folder) if folder else self.root
        if folder and os.path.islink(start):
            raise self.error("list", folder + "/", "%s is a symbolic link: refusing to follow it" % start)
        if not os.path.isdir(start):
            return found
        for directory, _dirs, files in os.walk(start):  # never descends into a symlinked folder
            for name in files:
                path = os.path.join(directory, name)
                key = os.path.relpath(path, self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    info = self._info(key, path)
                    if info:
                        found.append(info)
        return sorted(found, key=lambda i: i.key)

    @staticmethod
    def _info(key: str, path: str) -> Optional[ObjectInfo]:
        """Regular files only: a symlink (or a FIFO, a device) planted in the store is no object of ours."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def stat(self, key: str) -> Optional[ObjectInfo]:
        return self._info(key, self._path(key))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.error("delete", key, exc.strerror or str(exc)) from None

    def sync(self, folder: str) -> None:
        """Make deletions and renames in ``folder`` durable (a directory's fsync)."""
        fsync_dir(self._path(folder))
