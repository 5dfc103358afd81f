# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durable, private files: 0700 directories, 0600 files, fsync before rename."""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from .errors import BackupError, file_error


def describe_os_error(exc: OSError, path: str) -> str:
    if exc.errno == errno.ENOSPC:
        return "%s: no space left on device" % path
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "%s is not writable: %s" % (path, exc.strerror)
    return "%s: %s" % (path, exc.strerror or exc)


def ensure_private_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if os.name != "nt" and os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise BackupError("cannot create backup directory " + describe_os_error(exc, path), step="prepare") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BackupError("backup directory %s is not writable by this user" % path, step="prepare")


def fsync_dir(path: str) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: str):
    """Open a new file for writing, 0600, failing if it exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def write_file_atomic(path: str, data: bytes, mode: int = 0o600, what: str = "manifest", step: str = "manifest") -> None:
    """Temp name, fsync, rename, fsync the directory: readers see the old or the new file, never half.

    The temp name starts with a dot and ends in .tmp (collectors and the catalog skip it) and carries the
    process id, so two runs writing the same file never share one."""
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)  # the umask may have narrowed it
        os.replace(temp, path)
        fsync_dir(directory)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise file_error("cannot write %s %s" % (what, describe_os_error(exc, path)), exc, step) from None


def write_json_atomic(path: str, document: Any) -> None:
    write_file_atomic(path, json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
