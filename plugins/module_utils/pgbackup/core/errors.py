# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors the engine raises: each carries one line a person can act on, a kind and an exit code.

The kinds and their exit codes are declared here once and documented in docs/errors.md (a unit
test keeps the two equal). Exit codes 1 and 2 are left to Python (a failure before the engine
runs) and argparse (usage), which are also health's Nagios WARNING and CRITICAL; every engine error exits 3
or above (75 for a held lock, like the timers' queue lock), and an interrupted run exits 130.

Messages name no command-line flag or module option, because every front end shows them. Where a
message needs one to be actionable, the error carries a ``hint`` key (one of ``HINTS``) and each
front end appends it in its own words: the CLI its flags, the modules their options.
"""

from __future__ import annotations

import errno
from typing import Dict, List, Mapping, Optional, Type

# What each hint key tells the user to do; front ends render every key (cli/main.py, module_utils/common.py).
HINTS: Dict[str, str] = {
    "replace-target": "replace the target database's contents",
    "replace-rows": "empty each table before it is filled",
    "checksum-level": "verify only the checksums",
    "keygen": "create an encryption key",
    "keygen-signing": "make an Ed25519 signing key",
    "sync": "copy the backups a destination lacks again",
    "list": "list the backups",
    "list-destination": "list the backups at a destination (hint_value: its name)",
    "before-latest": "restore the newest backup before a time",
    "rekey-selection": "select the backups to re-encrypt",
    "database-url": "give the database to back up",
    "destination-primary": "work on the backup directory itself",
    "partial-aside": "restore the chosen tables beside the target instead of replacing it",
}

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT; SIGTERM (a timer being stopped) unwinds the same way


class BackupError(Exception):
    """A failure with a one-line, user-facing message (no secrets, no flag names in it).

    ``kind`` and ``exit_code`` belong to the class; ``step`` (which step failed) defaults to the
    class's and may be given per raise; ``hint`` is a key of ``HINTS`` and ``hint_value`` its argument.
    """

    kind = "failed"
    exit_code = 3
    step = "backup"

    def __init__(self, message: str, step: Optional[str] = None, hint: Optional[str] = None,
                 hint_value: Optional[str] = None) -> None:
        super().__init__(message)
        if step:
            self.step = step
        self.hint = hint  # tests/unit/test_errors.py checks every hint given is a key of HINTS
        self.hint_value = hint_value


class ConfigError(BackupError):
    """A setting, an option or an argument is missing or not valid: nothing ran."""

    kind = "config"
    exit_code = 4
    step = "config"


class ConnectionFailed(BackupError):
    """The database server cannot be reached or refuses the login."""

    kind = "unreachable"
    exit_code = 5
    step = "connect"


class ClientToolError(BackupError):
    """The PostgreSQL client tools are missing, broken or too old for the server."""

    kind = "client-tools"
    exit_code = 6
    step = "client-tools"


class NotFound(BackupError):
    """No backup matches the selection (or the one named is not a complete, good backup)."""

    kind = "not-found"
    exit_code = 7
    step = "select"


class VerifyError(BackupError):
    """A backup failed verification: it is damaged, incomplete or does not restore."""

    kind = "backup-bad"
    exit_code = 8
    step = "verify"


class DestinationError(BackupError):
    """A destination (S3, Azure, GCS, a second directory) failed; the message never carries a secret."""

    kind = "destination"
    exit_code = 9
    step = "destination"
    detail = ""  # the bare cause, for callers that name the object themselves (store/base.Store.error)


class RestoreError(BackupError):
    """A restore was refused or failed; the target was left as it was."""

    kind = "restore"
    exit_code = 10
    step = "restore"


class ResourceError(BackupError):
    """The machine lacks something (disk space): nothing is wrong with the backup."""

    kind = "resources"
    exit_code = 11
    step = "space"


class KeyMissing(ConfigError):
    """The key a backup needs is not available here: nothing is wrong with the backup."""

    kind = "key-missing"
    exit_code = 12
    step = "key"


class PartialRestore(RestoreError):
    """A restore told to keep going put in place what it could; the objects that failed are named."""

    kind = "restore-partial"
    exit_code = 13
    step = "restore"


class LockedError(BackupError):
    """Another run holds the repository lock; 75 (EX_TEMPFAIL) is also the timers' queue-lock code."""

    kind = "locked"
    exit_code = 75
    step = "lock"


class InternalError(BackupError):
    """An exception the engine did not expect (a bug): the front ends turn it into this one line.

    70 is ``EX_SOFTWARE`` (sysexits.h), an internal software error.
    """

    kind = "internal"
    exit_code = 70
    step = "internal"


KINDS: List[Type[BackupError]] = [BackupError, ConfigError, ConnectionFailed, ClientToolError, NotFound, VerifyError,
                                  DestinationError, RestoreError, ResourceError, KeyMissing, LockedError,
                                  PartialRestore, InternalError]


def exit_code_of(exc: BaseException) -> int:
    """The process exit code for an exception that ended a run."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT_CODE
    return getattr(exc, "exit_code", BackupError.exit_code)


def file_error(message: str, exc: OSError, step: str) -> BackupError:
    """The error for a failed write: a full disk or quota is a ResourceError (step ``space``); the rest fail ``step``.

    The message is the caller's; ``exc`` only decides the kind.
    """
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ResourceError(message)
    return BackupError(message, step=step)


def render(exc: BackupError, words: Mapping[str, str]) -> str:
    """The message with its hint in a front end's words (``words[hint]``, where ``%s`` is ``hint_value``).

    A front end's text carries its own leading separator (" (...)", "; ...", " or ...");
    an empty text adds nothing.
    """
    text = str(exc)
    hint = getattr(exc, "hint", None)
    if hint and words.get(hint):
        phrase = words[hint]
        text += phrase % exc.hint_value if "%s" in phrase else phrase
    return text
