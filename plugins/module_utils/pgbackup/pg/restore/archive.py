# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore of a backup's custom-format archive: streamed in one transaction, or from an unpacked copy
when it must seek (parallel jobs, several passes)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type

from ...codec.stored import open_stored
from ...config.connection import DbTarget
from ...config.settings import Config
from ...core.errors import BackupError, RestoreError
from ...core.fsutil import describe_os_error
from ...model.manifest import Backup
from ..runner import CHUNK, PIPE, ToolProcess, describe_exit, meaningful_lines, redact, run


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


# pg_restore follows each error with the statement that failed ("Command was: CREATE TABLE public.items (");
# verbose, it also names the entry ("from TOC entry 215; 1259 16390 TABLE public items owner").
_TOC_ENTRY = re.compile(r"from TOC entry \d+; \d+ \d+ (.+)$")
_COMMAND = re.compile(r"^Command was: (.+)$")
_IGNORED = re.compile(r"errors ignored on restore: (\d+)")
LISTED_FAILURES = 20  # objects named in an error line; the run log has them all


def failed_objects(stderr: str) -> Tuple[int, List[str]]:
    """(how many objects pg_restore could not restore, the objects it named) from its stderr."""
    objects = []
    for line in meaningful_lines(stderr):
        match = _COMMAND.match(line)
        if match:
            name = re.sub(r" IF NOT EXISTS| OR REPLACE", "", match.group(1))
            name = re.split(r" \(| FROM | WITH | AS | RETURNS |;", name)[0][:80]
            if name not in objects:
                objects.append(name)
            continue
        match = _TOC_ENTRY.search(line)
        if match:
            text = match.group(1)
            if text.endswith(" (no owner)"):
                name = text[:-len(" (no owner)")]
            else:
                words = text.split(" ")
                name = " ".join(words[:-1]) if len(words) > 2 else text  # the owner left out
            if name not in objects:
                objects.append(name)
    counted = _IGNORED.search(stderr)
    return (int(counted.group(1)) if counted else len(objects)), objects


def describe_failures(count: int, objects: Sequence[str]) -> str:
    """``3 objects failed: EXTENSION pgcrypto; FUNCTION public f(); ...`` for a message."""
    named = "; ".join(redact(o) for o in objects[:LISTED_FAILURES])
    more = len(objects) - LISTED_FAILURES
    return "%d object%s failed%s%s" % (count, "" if count == 1 else "s", ": " + named if named else "",
                                       " and %d more" % more if more > 0 else "")


def _outcome(returncode: int, stderr: str, failures: Optional[List[str]]) -> List[str]:
    """pg_restore's warnings; raise unless it succeeded, or (``failures`` given) only some objects failed."""
    if returncode == 0:
        return [redact(line) for line in meaningful_lines(stderr)]
    count, objects = failed_objects(stderr)
    ignored = _IGNORED.search(stderr) is not None  # it went on to the end: not a fatal (archive) error
    if failures is not None and ignored and returncode == 1:
        failures.extend(objects or ["%d objects pg_restore did not name" % count])
        return [redact(line) for line in meaningful_lines(stderr) if "errors ignored on restore" in line]
    message = describe_exit("pg_restore", returncode, stderr)
    if ignored:
        message += " (%s)" % describe_failures(count, objects)
    raise RestoreError(message, step="restore")


def pg_restore(pg_restore_path: str, staged: DbTarget, backup: Backup, entry: Dict[str, Any], cfg: Config,
               passes: Sequence[List[str]], jobs: int, plain: Optional[str] = None,
               failures: Optional[List[str]] = None) -> List[str]:
    """Run pg_restore once per pass (extra arguments each) into ``staged``; its warnings.

    One pass with one job streams the archive; otherwise the archive is read from ``plain`` (unpacked
    first when not given) with ``jobs`` parallel jobs. pg_restore goes on past a failed object, so an
    error names how many failed and which (``staged`` is a scratch database, dropped on failure);
    ``failures`` given (keep going): the objects that failed are added to it instead of raising.
    """
    common = [pg_restore_path, "--no-password", "--dbname=" + staged.url]
    if plain is None and jobs > 1:
        with unpacked_archive(backup, entry, cfg) as unpacked:
            return pg_restore(pg_restore_path, staged, backup, entry, cfg, passes, jobs, unpacked, failures)
    if plain is not None:
        parallel = ["--jobs=%d" % jobs] if jobs > 1 else []
        warnings: List[str] = []
        for extra in passes:
            out = run(common + parallel + list(extra) + [plain], "pg_restore", staged, check=False)
            warnings.extend(_outcome(out.returncode, out.stderr, failures))
        return warnings
    with ToolProcess(common, "pg_restore", staged, stdin=PIPE) as tool:
        with open_stored(backup, entry, cfg) as src:
            tool.feed(src, backup.file_path(entry), RestoreError)
        code = tool.wait()
        stderr = tool.stderr()
        tool.close()
        return _outcome(code, stderr, failures)


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
