# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durable, private files: 0700 directories, 0600 files, fsync before rename.

The repository is untrusted ground (issue #11): a directory we did not create is checked like ssh's
StrictModes (ours or root's, not writable by group or others, not a symlink) and never chmodded;
files are opened without following symlinks, and new files are created exclusively.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from typing import Any, BinaryIO

from .errors import BackupError, ConfigError, file_error

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def describe_os_error(exc: OSError, path: str) -> str:
    if exc.errno == errno.ENOSPC:
        return "%s: no space left on device" % path
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "%s is not writable: %s" % (path, exc.strerror)
    return "%s: %s" % (path, exc.strerror or exc)


def trusted_owner(uid: int) -> bool:
    """Files and directories we act on belong to us or to root."""
    return os.name == "nt" or uid in (os.geteuid(), 0)


def check_private_dir(path: str, follow: bool = False) -> None:
    """Refuse (ConfigError) a directory that another user could change under us: like ssh's StrictModes.

    ``path`` must be a real directory (not a symlink), owned by this user or root, not writable by group or
    others; each parent must be owned by this user or root and, when writable by others, sticky (``/tmp``).
    Nothing is chmodded: a mode we did not set is the owner's decision, and a wrong one is a refusal.
    ``follow``: ``path`` is a configured root (BACKUP_DIR, a destination) and may be a symlink that its
    owner placed: the link's parents and the directory it points to are checked instead."""
    if os.name == "nt":
        return
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise BackupError("cannot use directory " + describe_os_error(exc, path), step="prepare") from None
    if stat.S_ISLNK(st.st_mode) and follow:
        _check_parents(path)
        check_private_dir(os.path.realpath(path))
        return
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError("%s is a symbolic link: refusing to follow it; use the directory it points to" % path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("%s is not a directory" % path)
    if not trusted_owner(st.st_uid):
        raise ConfigError("%s is owned by uid %d, not by this user (uid %d) or root: refusing to use it; chown it "
                          "to this user or choose another directory" % (path, st.st_uid, os.geteuid()))
    if st.st_mode & 0o022:
        raise ConfigError("%s is writable by %s (mode %04o): refusing to use it; chmod go-w it or choose another "
                          "directory" % (path, "others" if st.st_mode & 0o002 else "its group",
                                         stat.S_IMODE(st.st_mode)))
    _check_parents(path)


def _check_parents(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            pst = os.stat(parent)
        except OSError:
            break
        if not trusted_owner(pst.st_uid) or (pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX):
            raise ConfigError("%s is inside %s, which another user can change (owner uid %d, mode %04o): refusing "
                              "to use it; choose a directory whose parents only this user or root can write"
                              % (path, parent, pst.st_uid, stat.S_IMODE(pst.st_mode)))
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)


def ensure_private_dir(path: str, follow: bool = False) -> None:
    """Create ``path`` (and missing parents) 0700, or check an existing one (``check_private_dir``)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a symlink or a file there: check_private_dir says which
    except OSError as exc:
        raise BackupError("cannot create backup directory " + describe_os_error(exc, path), step="prepare") from None
    check_private_dir(path, follow)
    if not os.access(path, os.W_OK | os.X_OK):
        raise BackupError("backup directory %s is not writable by this user" % path, step="prepare")


def open_private_regular(path: str, flags: int) -> int:
    """An fd on ``path`` opened without following a symlink, refused (OSError) unless it is a regular
    file with one link, owned by us or root: a planted link or hard link never redirects a write."""
    fd = os.open(path, flags | NOFOLLOW | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0), 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not trusted_owner(st.st_uid):
            raise OSError(errno.EPERM, "not a private regular file of this user (a link or someone else's file)")
    except OSError:
        os.close(fd)
        raise
    return fd


def open_read_nofollow(path: str) -> BinaryIO:
    """A file for reading, never through a symlink at its own name."""
    return os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_BINARY", 0)), "rb")


def fsync_dir(path: str) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: str):
    """Open a new file for writing, 0600, failing if it exists (a symlink there included)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def write_file_atomic(path: str, data: bytes, mode: int = 0o600, what: str = "manifest", step: str = "manifest") -> None:
    """Temp name, fsync, rename, fsync the directory: readers see the old or the new file, never half.

    The temp name starts with a dot and ends in .tmp (collectors and the catalog skip it) and carries the
    process id and a random token; it is created exclusively (O_EXCL: a file or symlink planted at that
    name is an error, never written through). The rename replaces a symlink at ``path``, never its target."""
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".%s.%d-%s.tmp" % (os.path.basename(path), os.getpid(), secrets.token_hex(4)))
    created = False
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_BINARY", 0), mode)
        created = True
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)  # the umask may have narrowed it
        os.replace(temp, path)
        fsync_dir(directory)
    except OSError as exc:
        if created:
            remove_quietly(temp)
        raise file_error("cannot write %s %s" % (what, describe_os_error(exc, path)), exc, step) from None


def write_json_atomic(path: str, document: Any) -> None:
    write_file_atomic(path, json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
