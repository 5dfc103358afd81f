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
import os
import re
import secrets
import stat
import tempfile
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import parse_qsl, quote, unquote

from ..core.errors import ConfigError
from ..core.fsutil import NOFOLLOW, check_private_dir
from ..core.process import alive

PASSFILE = re.compile(r"^pgpass-(?P<pid>[0-9]+)-[0-9a-f]+$")
_FALLBACK: List[str] = []  # this process's own directory when the per-user one is someone else's


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

    def describe(self) -> str:
        """The server, database and user for messages (``server db1:5432, database app, user backup``): never the
        password, and not the URL as written, which an Ansible module's no_log masks whole."""
        query = dict(parse_qsl(self._parts.query))
        try:
            parts = url_parts(self.url)
        except ConfigError:
            return "<invalid database URL>"
        host = parts["host"] or query.get("host") or "local socket"
        port = parts["port"] if self.hostinfo.rpartition(":")[2].isdigit() else query.get("port", parts["port"])
        return "server %s:%s, database %s, user %s" % (
            host, port, self.dbname or query.get("dbname") or "(default)",
            self.user or query.get("user") or "(default)")

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
        if match and not alive(int(match.group("pid"))):
            _remove_quietly(os.path.join(directory, name))


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
