# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental backups on every supported major: which method a server gets, and the WAL-method link.

* ``native`` (PostgreSQL 17+ with ``summarize_wal = on``): ``pg_basebackup --incremental`` against the
  parent's backup_manifest (ops/backup.py); the link is a tar, a chain is restored with pg_combinebackup.
* ``wal`` (15/16, or 17+ without ``summarize_wal``, when the server archives its WAL): the hourly run
  forces a segment switch, waits until the archive holds the WAL from the parent's end to the switch,
  and records that range as the link; no data file (the WAL objects are the archive's, kept by retention
  while a kept backup needs them). Restored as its base chain plus recovery to its stop LSN.

The manifest says which: ``method`` "physical" and ``incremental`` "native", or ``method`` and
``incremental`` "wal"; ``list`` shows it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.errors import BackupError, ConfigError, VerifyError
from ..model.manifest import Backup
from ..pg.client import query
from ..repo.walarchive import (DEFAULT_SEGMENT_SIZE, Segment, WalArchive, continuity, lsn_to_segno,
                               segment_size_of)

NATIVE = "native"
WAL = "wal"
NATIVE_MIN_MAJOR = 17  # pg_basebackup --incremental, pg_combinebackup, summarize_wal
WAL_WAIT_SECONDS = 120.0  # the archiver picks a switched segment up within seconds; a stuck one fails the run
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_WALFILE = re.compile(r"^[0-9A-F]{24}$")
SETTINGS_SQL = ("SELECT name, setting FROM pg_settings "
                "WHERE name IN ('summarize_wal', 'archive_mode', 'wal_level', 'wal_segment_size')")
# A commit record (so the link holds a record after its parent's end and the switch is never a no-op), where the
# link stops (right after it: the switch record follows, in the switched segment), then the switch that closes
# that segment for the archiver. Recovery to the stop LSN replays only archived records.
SWITCH_SQL = ("SELECT txid_current()", "SELECT pg_current_wal_insert_lsn()",
              "SELECT s.lsn, pg_walfile_name(s.lsn) FROM (SELECT pg_switch_wal() AS lsn) s")


@dataclass(frozen=True)
class Method:
    """The incremental method a server gets, and why (shown by check mode and recorded in the manifest)."""

    name: str
    why: str


def lsn_value(lsn: Any) -> int:
    """An LSN as a number: ``"0/2000028"`` (PostgreSQL's text) or an int."""
    if isinstance(lsn, int) and not isinstance(lsn, bool):
        return lsn
    match = _LSN.match(str(lsn or ""))
    if not match:
        raise ValueError("%r is not an LSN" % (lsn,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def lsn_text(value: int) -> str:
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def choose_method(major: int, settings: Mapping[str, str]) -> Method:
    """``native`` on 17+ with summarize_wal on, else ``wal`` when the server archives WAL; a one-line
    ConfigError saying what to turn on otherwise."""
    summarizing = str(settings.get("summarize_wal", "off")).lower() == "on"
    archiving = str(settings.get("archive_mode", "off")).lower() in ("on", "always")
    if major >= NATIVE_MIN_MAJOR and summarizing:
        return Method(NATIVE, "PostgreSQL %d with summarize_wal = on: pg_basebackup --incremental" % major)
    if archiving:
        return Method(WAL, "PostgreSQL %d%s with WAL archiving: the WAL archived since the parent"
                      % (major, " without summarize_wal" if major >= NATIVE_MIN_MAJOR else ""))
    if major >= NATIVE_MIN_MAJOR:
        raise ConfigError("incremental backups need summarize_wal = on on the server (PostgreSQL 17+; a reload "
                          "applies it, then take a base backup) or WAL archiving (archive_mode = on, "
                          "archive_command = 'seawall-pgbackup wal-push %p'; roles/wal_archive sets both)")
    raise ConfigError("incremental backups on PostgreSQL %d are the WAL archived since a base backup: they need "
                      "WAL archiving (archive_mode = on, archive_command = 'seawall-pgbackup wal-push %%p'; "
                      "roles/wal_archive sets it up)" % major)


def server_settings(psql: str, target: DbTarget) -> Dict[str, str]:
    return {row[0]: row[1] for row in query(psql, target, SETTINGS_SQL) if len(row) == 2}


def method_of(backup: Backup) -> Optional[str]:
    """``native`` or ``wal`` for an incremental (a manifest written before the field: native), else None."""
    if backup.kind != "incremental":
        return None
    if backup.manifest.incremental:
        return backup.manifest.incremental
    return WAL if backup.manifest.method == WAL else NATIVE


def has_tar(backup: Backup) -> bool:
    """Whether ``backup`` is a base or native link (a tar pg_basebackup --incremental can build on)."""
    return backup.kind == "base" or method_of(backup) == NATIVE


@dataclass(frozen=True)
class Switch:
    point: str      # the link's stop LSN: recovery to it replays the records from there (all archived)
    lsn: str        # where the switch ended the segment: the archive must reach it
    walname: str    # the segment holding the WAL just before it (pg_walfile_name)
    timeline: int


def switch_wal(psql: str, target: DbTarget, user: str) -> Switch:
    """``pg_switch_wal()``: closes the current segment so the archiver sends it now."""
    try:
        rows = [(query(psql, target, sql) or [[""]])[0] for sql in SWITCH_SQL]  # each its own transaction
    except BackupError as exc:
        if "permission denied" in str(exc):
            raise ConfigError("a WAL-method incremental forces a WAL segment switch: role %s needs EXECUTE on "
                              "pg_switch_wal() (or superuser): %s" % (user or "?", exc)) from None
        if "recovery is in progress" in str(exc):
            raise ConfigError("a WAL-method incremental is taken on the primary (pg_switch_wal() cannot run "
                              "during recovery): %s" % exc) from None
        raise
    if len(rows) != 3 or len(rows[2]) != 2 or not _WALFILE.match(rows[2][1]) or not _LSN.match(rows[1][0]):
        raise BackupError("pg_switch_wal() answered %r, not an LSN and a WAL file name" % (rows[-1:],))
    point, end = rows[1][0].upper(), rows[2][0].upper()
    if lsn_value(end) < lsn_value(point):
        raise BackupError("pg_switch_wal() answered %s, before the insert position %s" % (end, point))
    return Switch(point=point, lsn=end, walname=rows[2][1], timeline=int(rows[2][1][:8], 16))


def timeline_problem(segments: Sequence[Segment], parent_timeline: int, parent_stop: str,
                     server_timeline: int) -> Optional[str]:
    """Why the server's current timeline does not continue from the parent's end (None when it does): same
    timeline, or its archived .history file says it branched from the parent's timeline at or after the parent's
    stop LSN. A cluster restored to an earlier point keeps its system identifier: the WAL after the parent on the
    parent's timeline is then another history than the server's, and a link over it would restore that one."""
    if server_timeline == parent_timeline:
        return None
    history = next((s.history for s in segments if s.kind == "history" and s.timeline == server_timeline), None)
    if server_timeline > parent_timeline and history is not None:
        for timeline, switch in history:
            if timeline == parent_timeline:
                if lsn_value(switch) >= lsn_value(parent_stop):
                    return None
                return ("the server's timeline %d branched from timeline %d at %s, before the end of the parent "
                        "(%s): take a base backup" % (server_timeline, parent_timeline, switch, parent_stop))
    return ("the server is on timeline %d, and the WAL archive does not show it descending from timeline %d after "
            "the parent's end (%s): take a base backup" % (server_timeline, parent_timeline, parent_stop))


def wait_until_archived(reached: Callable[[], Tuple[int, str]], stop: int, timeout: float, what: str,
                        clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll ``reached()`` -> (LSN the archive reaches contiguously, what is missing) until it is >= ``stop``;
    a one-line BackupError after ``timeout`` seconds."""
    deadline = clock() + timeout
    delay = 0.2
    while True:
        lsn, missing = reached()
        if lsn >= stop:
            return lsn
        if clock() >= deadline:
            raise BackupError("%s: the WAL archive does not reach %s after %d s (it reaches %s%s): is archive_command "
                              "'seawall-pgbackup wal-push %%p' with this backup directory, and does it succeed "
                              "(pg_stat_archiver)?" % (what, lsn_text(stop), int(timeout), lsn_text(lsn),
                                                       ", missing %s" % missing if missing else ""))
        sleep(delay)
        delay = min(delay * 2, 2.0)


def segment_size(segments: Sequence[Segment]) -> int:
    """The WAL segment size of an archive: the size of its full segment files (16 MiB when there are none)."""
    sizes = {segment_size_of(s) for s in segments if s.kind == "segment"}
    return max(sizes) if sizes else DEFAULT_SEGMENT_SIZE


def archive_reach(segments: List[Segment], start_lsn: str, timeline: int, stop_lsn: str) -> Tuple[int, str]:
    """(the LSN the archive holds contiguously from ``start_lsn`` on ``timeline``, the first missing file)."""
    found = continuity(segments, start_lsn, timeline, until_lsn=stop_lsn)
    return lsn_value(found.reached_lsn), (found.gaps[0] if found.gaps else "")


def wal_archive(cfg: Config, destination: Optional[str] = None) -> WalArchive:
    return WalArchive(cfg, destination)


def range_files(segments: Sequence[Segment], start_lsn: str, stop_lsn: str, timelines: Sequence[int],
                seg_size: int) -> List[Segment]:
    """The archived segments (and history files) of ``timelines`` that hold WAL in [start, stop)."""
    first = lsn_to_segno(start_lsn, seg_size)
    last = lsn_to_segno(lsn_text(max(lsn_value(stop_lsn) - 1, lsn_value(start_lsn))), seg_size)
    wanted = set(timelines)
    return [s for s in segments if s.timeline in wanted and (
        s.kind == "history" or (s.kind == "segment" and s.segno is not None and first <= s.segno <= last))]


def check_wal_link(cfg: Config, backup: Backup, deep: bool = True, destination: Optional[str] = None) -> str:
    """Verify a WAL-method incremental: the archive (of the backup directory, or of ``destination``) holds its WAL
    contiguously from start to stop (following timeline switches); ``deep``: every file of the range is read back
    and checked against its record."""
    manifest = backup.manifest
    if not (manifest.start_lsn and manifest.stop_lsn and manifest.timeline):
        raise VerifyError("%s: a WAL-method incremental without its WAL range (start_lsn, stop_lsn, timeline)"
                          % backup.id)
    parent_timeline = int(manifest.extra.get("start_timeline") or manifest.timeline)
    archive = wal_archive(cfg, destination)
    try:
        segments = archive.segments()
        # the segment holding the stop LSN itself: recovery to it replays the first record from there
        needed = lsn_text(lsn_value(manifest.stop_lsn) + 1)
        found = continuity(segments, manifest.start_lsn, parent_timeline, until_lsn=needed)
        if not found.reaches(needed):
            raise VerifyError("%s: the WAL archive holds %s..%s only up to %s%s" % (
                backup.id, manifest.start_lsn, manifest.stop_lsn, found.reached_lsn,
                " (missing %s)" % ", ".join(found.gaps[:3]) if found.gaps else ""))
        timelines = found.timelines or [parent_timeline]
        files = range_files(segments, manifest.start_lsn, manifest.stop_lsn, timelines, segment_size(segments))
        if deep:
            for segment in files:
                problem = archive.check_data(segment)
                if problem:
                    raise VerifyError("%s: WAL file %s: %s" % (backup.id, segment.wal, problem))
    finally:
        archive.close()
    return "WAL %s..%s (timeline %s) contiguous in the archive: %d files%s" % (
        manifest.start_lsn, manifest.stop_lsn, ", ".join(str(t) for t in timelines), len(files),
        ", each read back and checked" if deep else "")
