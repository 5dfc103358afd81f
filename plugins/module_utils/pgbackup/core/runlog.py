# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One line per event in ``logs/backup.log``; failures also in ``logs/backup-failures.log``."""

from __future__ import annotations

import os
from typing import Any

from .clock import iso, utc_now
from .fsutil import open_private_regular


def _format(level: str, event: str, fields: dict) -> str:
    parts = ["%s=%s" % (k, _value(v)) for k, v in fields.items() if v is not None]
    return "%s %s %s %s\n" % (iso(utc_now()), level, event, " ".join(parts))


def _value(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return '"%s"' % text.replace('"', "'") if (" " in text or not text) else text


class RunLog:
    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def _append(self, name: str, line: str) -> None:
        try:
            path = os.path.join(self.log_dir, name)
            # never through a symlink or hard link planted at the log's name (issue #11)
            fd = open_private_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass  # a log that cannot be written never turns a backup into a failure

    def info(self, event: str, **fields: Any) -> None:
        self._append("backup.log", _format("INFO", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self._append("backup.log", _format("WARNING", event, fields))

    def failure(self, event: str, **fields: Any) -> None:
        line = _format("ERROR", event, fields)
        self._append("backup.log", line)
        self._append("backup-failures.log", line)
