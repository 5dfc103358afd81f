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
from typing import Any, Dict, Mapping, Optional
from urllib.parse import quote, unquote

from ..core.errors import ConfigError


class _Url:
    """A postgresql:// URL cut the way libpq cuts it, so a password may hold any character.

    urllib would end the authority at a raw ``#``, ``?`` or ``/`` and so leak the rest of a password
    into the host, the query or the fragment; libpq ends the user info at the first ``@`` before any
    ``/``, and so do we, extended to the last ``@`` before the host (a raw ``@`` in a password).
    Nothing of the URL is ever quoted in an error: it may hold a password.
    """

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("postgres", "postgresql"):
            shown = " %r" % scheme if sep and scheme.isalnum() and len(scheme) < 20 else ""
            raise ConfigError("database URL scheme%s is not valid: use postgresql://" % shown)
        self.scheme = scheme
        self.userinfo: Optional[str] = None
        cut = _first_of(rest, "@/")
        if cut < len(rest) and rest[cut] == "@":
            host_start = _first_of(rest, "/", cut)
            last_at = rest.rfind("@", 0, host_start)
            self.userinfo, rest = rest[:last_at], rest[last_at + 1:]
        elif "@" in rest[:_first_of(rest, "?", cut)]:
            # A raw "/" before the "@": libpq would take the password for a host and a path; never guess.
            raise ConfigError("database URL is not valid: percent-encode a '/' in the user name or password as %2F")
        path_start = _first_of(rest, "/?")
        query_start = _first_of(rest, "?", path_start)
        self.hostinfo = rest[:path_start]
        self.path = rest[path_start:query_start]
        self.query = rest[query_start + 1:] if query_start < len(rest) else ""

    @property
    def user(self) -> str:
        """The user name as written (percent-encoded)."""
        return (self.userinfo or "").split(":", 1)[0]

    @property
    def password(self) -> Optional[str]:
        if self.userinfo is None or ":" not in self.userinfo:
            return None
        return unquote(self.userinfo.split(":", 1)[1])

    def without_password(self, path: Optional[str] = None) -> str:
        netloc = ("%s@" % self.user if self.userinfo is not None else "") + self.hostinfo
        path = self.path if path is None else path
        return "%s://%s%s%s" % (self.scheme, netloc, path, "?" + self.query if self.query else "")


def _first_of(text: str, chars: str, start: int = 0) -> int:
    """The index of the first of ``chars`` in ``text`` from ``start``; len(text) when none is."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found) if found else len(text)


def url_parts(url: str) -> Dict[str, Any]:
    """user, password (decoded, None when absent), host, port (5432 when absent) and dbname of a database URL.

    Cut the way DbTarget cuts it (a password may hold any character); ConfigError, never echoing the URL,
    when it is not valid.
    """
    parts = _Url(url)
    host, port = parts.hostinfo, ""
    if host.startswith("["):  # [IPv6]:port
        end = host.find("]")
        host, port = host[1:end], host[end + 2:] if host[end + 1:end + 2] == ":" else ""
    elif ":" in host:
        host, port = host.rsplit(":", 1)
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError("database URL is not valid: its port is not a number from 1 to 65535")
    return {"user": unquote(parts.user), "password": parts.password, "host": unquote(host),
            "port": int(port) if port else 5432, "dbname": unquote(parts.path.lstrip("/"))}


def redact_url(url: str) -> str:
    """The URL with any password removed, safe for logs and output."""
    try:
        return _Url(url).without_password()
    except ConfigError:
        return "<invalid database URL>"


def escape_passfile(value: str) -> str:
    """A libpq passfile field: backslash and colon escaped."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


class DbTarget:
    """One database reached through a URL; hands out a child environment for libpq tools."""

    def __init__(self, url: str) -> None:
        parts = _Url(url)
        self._password: Optional[str] = parts.password
        self.user = unquote(parts.user) or None
        self.dbname = unquote(parts.path.lstrip("/")) or None
        self.hostinfo = parts.hostinfo
        self._parts = parts
        self.url = parts.without_password()
        self._passfile: Optional[str] = None

    def for_database(self, dbname: str) -> "DbTarget":
        """The same server and credentials, another database."""
        clone = DbTarget.__new__(DbTarget)
        clone.__dict__.update(self.__dict__)
        clone.dbname = dbname
        clone.url = self._parts.without_password("/" + quote(dbname, safe=""))
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


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
