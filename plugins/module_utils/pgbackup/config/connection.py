# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Database URLs without secrets on command lines.

Client tools get the URL *without* its password in argv (``ps`` shows argv to every
user); the password goes into a private libpq passfile (0600) named by PGPASSFILE.

Passfiles live in a private runtime directory (``runtime_dir``): systemd's ``$RUNTIME_DIRECTORY``, else
``$XDG_RUNTIME_DIR/seawall-pgbackup``, else ``<tmp>/seawall-pgbackup-<uid>`` (0700, ours, checked). A run
killed with SIGKILL cannot remove its passfile; the next run removes every passfile whose process is gone.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import secrets
import stat
import tempfile
from typing import Dict, List, Mapping, Optional
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..core.errors import ConfigError
from ..core.fsutil import NOFOLLOW, check_private_dir

PASSFILE = re.compile(r"^pgpass-(?P<pid>[0-9]+)-[0-9a-f]+$")
_FALLBACK: List[str] = []  # this process's own directory when the per-user one is someone else's


def _split(url: str):
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError("database URL scheme %r is not valid: use postgresql://" % parts.scheme)
    return parts


def redact_url(url: str) -> str:
    """The URL with any password removed, safe for logs and output."""
    try:
        parts = _split(url)
    except ConfigError:
        return "<invalid database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        netloc = "%s@%s" % (userinfo.split(":", 1)[0], hostinfo)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def escape_passfile(value: str) -> str:
    """A libpq passfile field: backslash and colon escaped."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


class DbTarget:
    """One database reached through a URL; hands out a child environment for libpq tools."""

    def __init__(self, url: str) -> None:
        parts = _split(url)
        self._password: Optional[str] = None
        userinfo = ""
        hostinfo = parts.netloc
        if "@" in parts.netloc:
            userinfo, hostinfo = parts.netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo, secret = userinfo.split(":", 1)
                self._password = unquote(secret)
        self.user = unquote(userinfo) or None
        self.dbname = unquote(parts.path.lstrip("/")) or None
        self.hostinfo = hostinfo
        self._parts = parts
        self.url = redact_url(url)
        self._passfile: Optional[str] = None

    def for_database(self, dbname: str) -> "DbTarget":
        """The same server and credentials, another database."""
        clone = DbTarget.__new__(DbTarget)
        clone.__dict__.update(self.__dict__)
        clone.dbname = dbname
        clone.url = urlunsplit((self._parts.scheme, _netloc_without_password(self._parts.netloc),
                                "/" + quote(dbname, safe=""), self._parts.query, ""))
        return clone

    def borrow_password(self, other: "DbTarget") -> None:
        """Use ``other``'s password when this URL has none and names the same user on the same server."""
        if self._password is None and other._password is not None \
                and (self.user, self.hostinfo) == (other.user, other.hostinfo):
            self._password = other._password

    def env(self, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        env.setdefault("PGAPPNAME", "seawall-pgbackup")
        if self._password is not None:
            env["PGPASSFILE"] = self._ensure_passfile()
            env.pop("PGPASSWORD", None)
        return env

    def _ensure_passfile(self) -> str:
        if self._passfile and os.path.exists(self._passfile):
            return self._passfile
        directory = runtime_dir()
        remove_stale_passfiles(directory)
        path = os.path.join(directory, "pgpass-%d-%s" % (os.getpid(), secrets.token_hex(8)))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("*:*:*:*:%s\n" % escape_passfile(self._password or ""))
        self._passfile = path
        atexit.register(_remove_quietly, path)
        return path

    def close(self) -> None:
        if self._passfile:
            _remove_quietly(self._passfile)
            self._passfile = None


def runtime_dir(env: Optional[Mapping[str, str]] = None) -> str:
    """The private directory for this user's passfiles (created 0700; refused unless ours and private)."""
    env = os.environ if env is None else env
    candidates = []
    if env.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=: private to the unit, removed when it stops
        candidates.append(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(env["XDG_RUNTIME_DIR"], "seawall-pgbackup"))
    uid = os.geteuid() if hasattr(os, "geteuid") else 0
    candidates.append(os.path.join(tempfile.gettempdir(), "seawall-pgbackup-%d" % uid))
    problem = None
    for directory in candidates:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            problem = "%s: %s" % (directory, exc.strerror)
            continue
        try:
            check_private_dir(directory)
            if os.name != "nt" and stat.S_IMODE(os.lstat(directory).st_mode) & 0o077:
                raise ConfigError("%s is readable by others" % directory)
        except Exception as exc:  # pylint: disable=broad-except
            problem = str(exc)
            continue
        return directory
    if _FALLBACK:
        return _FALLBACK[0]
    try:  # the per-user name is taken by someone else (a planted directory): a fresh private one, never theirs
        directory = tempfile.mkdtemp(prefix="seawall-pgbackup-%d-" % uid)
        _FALLBACK.append(directory)
    except OSError as exc:
        raise ConfigError("no private directory for the database password file: %s (%s)"
                          % (problem, exc.strerror)) from None
    atexit.register(_remove_dir_quietly, directory)
    return directory


def _remove_dir_quietly(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def remove_stale_passfiles(directory: str) -> None:
    """Passfiles of runs that were killed (their process is gone): a password never outlives the next run."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = PASSFILE.match(name)
        if match and not _running(int(match.group("pid"))):
            _remove_quietly(os.path.join(directory, name))


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _netloc_without_password(netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, hostinfo = netloc.rsplit("@", 1)
    return "%s@%s" % (userinfo.split(":", 1)[0], hostinfo)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
