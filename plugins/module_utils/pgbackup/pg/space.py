# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is there room for a restore? Checked before anything is touched, when the server is on this host."""

from __future__ import annotations

import os
import shutil
from typing import List

from ..config.connection import DbTarget
from ..core.errors import BackupError, ResourceError
from ..model.manifest import Backup
from .client import query

LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "[::1]", "::1")
HEADROOM = 1.1  # WAL and temporary files while indexes are built


def _is_local(target: DbTarget) -> bool:
    host = target.hostinfo.rsplit(":", 1)[0] if not target.hostinfo.endswith("]") else target.hostinfo
    return host in LOCAL_HOSTS or host.startswith("%2F") or host.startswith("/")


def gib(size: float) -> str:
    return "%.1f GiB" % (size / 1024 ** 3) if size >= 1024 ** 3 else "%.0f MiB" % (size / 1024 ** 2)


def check_free_space(psql: str, admin: DbTarget, backup: Backup, warnings: List[str]) -> None:
    """Fail when the server's data directory cannot hold the database as large as it was at backup time."""
    needed = backup.manifest.database_size
    if not needed or not _is_local(admin):
        return
    try:
        data_dir = query(psql, admin, "SELECT current_setting('data_directory')")[0][0]
    except BackupError as exc:  # needs superuser or pg_read_all_settings
        warnings.append("free space not checked: %s" % exc)
        return
    if not os.path.isdir(data_dir):
        return  # the server runs in a container or elsewhere: its path is not ours to measure
    free = shutil.disk_usage(data_dir).free
    if free < needed * HEADROOM:
        raise ResourceError("not enough free space for backup %s: %s has %s free, the database needs about %s "
                            "(its size at backup time)" % (backup.id, data_dir, gib(free), gib(needed * HEADROOM)))
