# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Database URLs without secrets on command lines.

Client tools get the URL *without* its password in argv (``ps`` shows argv to every
user); the password goes into a private libpq passfile (0600) named by PGPASSFILE.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from typing import Dict, Mapping, Optional
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..core.errors import ConfigError


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
        fd, path = tempfile.mkstemp(prefix="seawall-pgpass-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("*:*:*:*:%s\n" % escape_passfile(self._password or ""))
        os.chmod(path, 0o600)
        self._passfile = path
        atexit.register(_remove_quietly, path)
        return path

    def close(self) -> None:
        if self._passfile:
            _remove_quietly(self._passfile)
            self._passfile = None


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
