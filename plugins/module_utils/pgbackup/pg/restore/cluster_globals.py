# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster globals (roles, tablespaces) replayed with psql; existing roles and the connecting role stay as they are."""

from __future__ import annotations

from typing import Any, Dict, List

from ...codec.stored import open_stored
from ...config.connection import DbTarget
from ...config.settings import Config
from ...core.errors import RestoreError
from ...model.manifest import Backup
from ..client import ServerInfo, query
from ..globals_sql import filter_globals
from ..runner import PIPE, ToolProcess


def apply_globals(psql: str, admin: DbTarget, info: ServerInfo, backup: Backup, entry: Dict[str, Any],
                  cfg: Config) -> List[str]:
    """Run the filtered globals script of ``entry`` on the cluster; its warnings."""
    roles = {r[0] for r in query(psql, admin, "SELECT rolname FROM pg_roles")}
    spaces = {r[0] for r in query(psql, admin, "SELECT spcname FROM pg_tablespace")}
    path = backup.file_path(entry)
    with ToolProcess([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", admin.url, "-f", "-"],
                     "psql", admin, stdin=PIPE) as run:
        try:
            with open_stored(backup, entry, cfg) as raw:
                text = (line.decode("utf-8") for line in raw)
                for line in filter_globals(text, roles, info.current_user, spaces):
                    run.stdin.write(line.encode("utf-8"))
        except BrokenPipeError:
            pass  # psql stopped reading: its exit status says why
        except (EOFError, OSError, ValueError) as exc:
            run.kill()
            raise RestoreError("%s is corrupt or truncated: %s" % (path, exc)) from None
        run.close_stdin()
        return run.finish("globals", RestoreError)
