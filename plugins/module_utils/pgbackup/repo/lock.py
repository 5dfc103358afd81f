# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run per backup directory: an OS-level lock released by the kernel if we die."""

from __future__ import annotations

import errno
import os
import time

from ..core.errors import ConfigError, LockedError, file_error
from ..core.fsutil import check_private_dir, describe_os_error, open_private_regular

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class RepositoryLock:
    def __init__(self, path: str, wait_seconds: float = 0) -> None:
        self.path = path
        self.wait_seconds = wait_seconds
        self._fd = None  # type: int | None

    def __enter__(self) -> "RepositoryLock":
        # The directory is checked (ours, not writable by others) and the lock file opened without following
        # a symlink: a planted ``.lock -> /etc/something`` is refused, never truncated.
        check_private_dir(os.path.dirname(self.path), follow=True)  # the configured root may be a symlink
        try:
            fd = open_private_regular(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EPERM):  # a symlink, a hard link or another user's file
                raise ConfigError("cannot use lock file %s (refusing a symlink, a hard link or another user's "
                                  "file): remove it and run again" % describe_os_error(exc, self.path)) from None
            # a read-only or full backup directory: one line, not a traceback
            raise file_error("cannot open the lock file %s: %s" % (self.path, exc.strerror or exc), exc,
                             "prepare") from None
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    import msvcrt  # pylint: disable=import-error,import-outside-toplevel

                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise LockedError("another seawall-pgbackup run holds %s%s; try again when it ends"
                                      % (self.path, " (pid %s)" % holder if holder else "")) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases flock/msvcrt locks
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
