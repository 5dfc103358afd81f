# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stream directory of ``wal-receive`` (docs/wal.md, "Near-zero RPO"): ``<backup_dir>/wal/stream/``.

pg_receivewal writes the segment it is receiving as ``<segment>.partial`` (full size, zero-padded) and renames it
to ``<segment>`` once complete; ``ops/walreceive.py`` pushes every completed file into the archive and then
removes it. What is left here is WAL the archive does not hold yet: ``wal-fetch`` and the point-in-time
reachability check read it when the archive has nothing under a name, so a lost data directory loses at most
what pg_receivewal had not received.

The folder sits under ``wal/`` so that it belongs to the repository (same owner, same disk) and is found from
the backup directory alone (restore_command knows nothing else); the archive's listings take only the objects
directly in ``wal/`` and the catalog only its kind folders, so nothing there is ever listed, verified or removed
as an archived file. Only the local repository has it (destinations lag by one segment: what was pushed).

Read only as regular files, opened without following a symlink, under names that are exactly WAL names.
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import datetime, timezone
from typing import List, Optional, Set, Tuple

from ..core.errors import BackupError
from ..core.fsutil import check_private_dir, create_private, ensure_private_dir, open_read_nofollow, remove_quietly
from .walarchive import (CHUNK, FOLDER, HISTORY_NAME, PARTIAL_NAME, SEGMENT_NAME, Segment, parse_history,
                         segno_of, _valid_segment_size)

STREAM = "stream"
PARTIAL = ".partial"


def stream_dir(backup_dir: str) -> str:
    return os.path.join(os.path.abspath(backup_dir), FOLDER, STREAM)


def ensure_stream_dir(backup_dir: str) -> str:
    """``wal/stream`` of the repository, created 0700 (and checked like the repository: ours, private)."""
    root = os.path.abspath(backup_dir)
    ensure_private_dir(root, follow=True)
    ensure_private_dir(os.path.join(root, FOLDER))
    folder = stream_dir(root)
    ensure_private_dir(folder)
    return folder


def _regular(path: str) -> Optional[os.stat_result]:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _usable(backup_dir: Optional[str]) -> Optional[str]:
    """The stream directory when there is one to read (a real, private directory of ours), else None."""
    if not backup_dir:
        return None
    folder = stream_dir(backup_dir)
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None  # a symlink planted as wal/stream is never followed
    check_private_dir(folder)
    return folder


def completed(folder: str) -> List[str]:
    """Names of the completed files pg_receivewal left in ``folder`` (segments and .history), oldest first;
    regular files only."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = [n for n in names if (SEGMENT_NAME.match(n) or HISTORY_NAME.match(n))
             and _regular(os.path.join(folder, n)) is not None]
    # history files first: recovery (and continuity) needs a timeline's history before its segments
    return sorted(found, key=lambda n: (not HISTORY_NAME.match(n), n))


def source_of(backup_dir: Optional[str], walname: str) -> Optional[str]:
    """The stream file that serves ``walname``: its in-progress ``.partial`` or the completed file (a segment
    or a .history); None when the stream holds neither (or there is no stream directory)."""
    if not (SEGMENT_NAME.match(walname or "") or HISTORY_NAME.match(walname or "")):
        return None
    folder = _usable(backup_dir)
    if folder is None:
        return None
    # the partial first: pg_receivewal renames it to the completed name, so the other order could miss both
    candidates = [walname + PARTIAL, walname] if SEGMENT_NAME.match(walname) else [walname]
    for name in candidates:
        if _regular(os.path.join(folder, name)) is not None:
            return os.path.join(folder, name)
    return None


def copy_from_stream(backup_dir: Optional[str], walname: str, dest_path: str) -> bool:
    """Write the stream's ``walname`` (completed, or its .partial) to ``dest_path`` (temp name, fsync, rename);
    False when the stream does not hold it. A symlink or other non-regular file is never served."""
    source = source_of(backup_dir, walname)
    if source is None:
        return False
    dest_path = os.path.abspath(dest_path)
    temp = os.path.join(os.path.dirname(dest_path), ".%s.%d-%s.tmp" % (os.path.basename(dest_path), os.getpid(),
                                                                       secrets.token_hex(4)))
    try:
        handle = open_read_nofollow(source)
    except FileNotFoundError:
        return False  # completed and pushed meanwhile: the caller asks the archive again
    except OSError as exc:
        raise BackupError("cannot read %s: %s" % (source, exc.strerror or exc), step="wal-fetch") from None
    try:
        with handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return False
            with create_private(temp) as out:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, dest_path)
    except OSError as exc:
        remove_quietly(temp)
        raise BackupError("cannot write %s: %s" % (dest_path, exc.strerror or exc), step="wal-fetch") from None
    except BaseException:
        remove_quietly(temp)
        raise
    return True


def stream_segments(backup_dir: Optional[str], archived: List[Segment]) -> List[Segment]:
    """The stream's files the archive does not hold, as the Segments recovery would get from ``wal-fetch``
    (a ``.partial`` as its segment: its end is where its valid records end, which pg_waldump finds). Their
    ``stored`` is ``stream/<file>``, ``digest`` empty: they are never archived objects."""
    folder = _usable(backup_dir)
    if folder is None:
        return []
    have: Set[Tuple[str, str]] = {(s.wal, s.kind) for s in archived}
    found: List[Segment] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        if PARTIAL_NAME.match(name):
            wal, kind = name[:-len(PARTIAL)], "segment"
        elif SEGMENT_NAME.match(name):
            wal, kind = name, "segment"
        elif HISTORY_NAME.match(name):
            wal, kind = name, "history"
        else:
            continue
        st = _regular(os.path.join(folder, name))
        if st is None or (wal, kind) in have:
            continue
        if kind == "segment" and not _valid_segment_size(st.st_size):
            continue  # not (yet) a full-size file: nothing recovery could read
        history: Tuple[Tuple[int, str], ...] = ()
        if kind == "history":
            try:
                with open_read_nofollow(os.path.join(folder, name)) as handle:
                    history = parse_history(handle.read(64 * 1024))
            except OSError:
                continue
        moment = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        have.add((wal, kind))
        found.append(Segment(wal=wal, timeline=int(wal[:8], 16),
                             segno=segno_of(wal, st.st_size) if kind == "segment" else None, digest="",
                             size=st.st_size, stored="%s/%s" % (STREAM, name), record="", modified_at=moment,
                             archived_at=moment, kind=kind, history=history))
    return found


def with_stream(backup_dir: Optional[str], archived: List[Segment]) -> List[Segment]:
    """``archived`` and the stream's files it lacks, in the archive's order (timeline, segno, name)."""
    merged = list(archived) + stream_segments(backup_dir, archived)
    merged.sort(key=lambda s: (s.timeline, s.segno if s.segno is not None else -1, s.wal))
    return merged


__all__ = ["STREAM", "stream_dir", "ensure_stream_dir", "completed", "source_of", "copy_from_stream",
           "stream_segments", "with_stream"]
