# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore of a backup's custom-format archive: streamed in one transaction, or from an unpacked copy
when it must seek (parallel jobs, several passes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Type

from ...codec.stored import open_stored
from ...config.connection import DbTarget
from ...config.settings import Config
from ...core.errors import BackupError, RestoreError
from ...core.fsutil import describe_os_error
from ...model.manifest import Backup
from ..runner import CHUNK, PIPE, ToolProcess, run


@contextmanager
def unpacked_archive(backup: Backup, entry: Dict[str, Any], cfg: Config) -> Iterator[str]:
    """The archive decompressed (and decrypted) beside the backups, removed afterwards."""
    path = backup.file_path(entry)
    scratch = tempfile.mkdtemp(prefix=".restore-%d-" % os.getpid(), dir=os.path.dirname(backup.directory))
    try:
        plain = os.path.join(scratch, "archive.dump")
        try:
            with open_stored(backup, entry, cfg) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        except (EOFError, ValueError) as exc:
            raise RestoreError("%s is corrupt or truncated: %s" % (path, exc)) from None
        except OSError as exc:
            raise RestoreError("cannot unpack the archive: " + describe_os_error(exc, plain)) from None
        yield plain
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pg_restore(pg_restore_path: str, staged: DbTarget, backup: Backup, entry: Dict[str, Any], cfg: Config,
               passes: Sequence[List[str]], jobs: int, plain: Optional[str] = None) -> List[str]:
    """Run pg_restore once per pass (extra arguments each) into ``staged``; its warnings.

    One pass with one job streams the archive into a single transaction; otherwise the archive is
    read from ``plain`` (unpacked first when not given) with ``jobs`` parallel jobs.
    """
    common = [pg_restore_path, "--exit-on-error", "--no-password", "--dbname=" + staged.url]
    if plain is None and jobs > 1:
        with unpacked_archive(backup, entry, cfg) as unpacked:
            return pg_restore(pg_restore_path, staged, backup, entry, cfg, passes, jobs, unpacked)
    if plain is not None:
        parallel = ["--jobs=%d" % jobs] if jobs > 1 else []
        for extra in passes:
            run(common + parallel + list(extra) + [plain], "pg_restore", staged, error=RestoreError)
        return []
    with ToolProcess(common + ["--single-transaction"], "pg_restore", staged, stdin=PIPE) as tool:
        with open_stored(backup, entry, cfg) as src:
            tool.feed(src, backup.file_path(entry), RestoreError)
        return tool.finish("restore", RestoreError)


def list_archive(pg_restore_path: str, source: IO[bytes], label: str,
                 error: Type[BackupError] = BackupError) -> List[str]:
    """The table of contents of the custom-format archive read from ``source`` (pg_restore --list).

    pg_restore needs only the head; ``source`` is still read to its end, so every byte is checked.
    """
    with tempfile.TemporaryFile() as listing:  # a file, not a pipe: a long listing must never block pg_restore
        with ToolProcess([pg_restore_path, "--list"], "pg_restore --list", stdin=PIPE, stdout=listing) as tool:
            tool.feed(source, label, error, drain=True)
            tool.finish(error=error)
        listing.seek(0)
        text = listing.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line and not line.startswith(";")]
