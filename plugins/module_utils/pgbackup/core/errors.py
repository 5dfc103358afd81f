# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors the engine raises: each carries one line a person can act on."""

from __future__ import annotations


class BackupError(Exception):
    """A failure with a one-line, user-facing message (no secrets in it)."""

    step = "backup"

    def __init__(self, message: str, step: str | None = None) -> None:
        super().__init__(message)
        if step:
            self.step = step


class ConfigError(BackupError):
    step = "config"


class ConnectionFailed(BackupError):
    step = "connect"


class ClientToolError(BackupError):
    step = "client-tools"


class LockedError(BackupError):
    step = "lock"


class NotFound(BackupError):
    step = "select"


class ResourceError(BackupError):
    """The machine lacks something (disk space): nothing is wrong with the backup."""

    step = "space"


class RestoreError(BackupError):
    step = "restore"


class VerifyError(BackupError):
    step = "verify"
