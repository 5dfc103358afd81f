# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL operations over the archive (repo/walarchive.py): push and fetch for PostgreSQL, status and verification.

``wal_push`` / ``wal_fetch`` are what archive_command and restore_command run; neither takes the repository
lock. ``wal_status`` is what health and metrics read (newest segment, its age, gaps); ``verify_wal`` also
reads every data object back (``verify --wal``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

from ..config.settings import Config
from ..core.clock import iso, utc_now
from ..core.errors import BackupError
from ..model.manifest import Backup
from ..repo.catalog import open_repository
from ..repo.walarchive import (DEFAULT_SEGMENT_SIZE, Continuity, Segment, WalArchive, continuity, format_lsn,
                               lsn_to_segno, segment_size_of)

PHYSICAL = ("base", "incremental")


def wal_push(cfg: Config, path: str) -> Dict[str, Any]:
    """archive_command: archive ``path`` here and at every destination (idempotent for the same content)."""
    archive = WalArchive(cfg)
    try:
        return archive.push(path)
    finally:
        archive.close()


def wal_fetch(cfg: Config, walname: str, dest: str, destination: Optional[str] = None) -> bool:
    """restore_command: the archived ``walname`` at ``dest``; False when archived nowhere."""
    archive = WalArchive(cfg, destination)
    try:
        return archive.fetch(walname, dest)
    finally:
        archive.close()


def _baseline(segments: List[Segment], backups: List[Backup]) -> Tuple[Optional[Backup], Optional[Tuple[str, int]]]:
    """Where continuity is measured from: the end of the oldest physical backup taken while WAL was already
    archived (its own WAL is in the backup; recovery needs the archive from its stop LSN on), else the oldest
    archived segment. (None, None) when nothing is archived."""
    files = [s for s in segments if s.kind == "segment" and s.segno is not None]
    if not files:
        return None, None
    seg_size = segment_size_of(files[0])
    first = {}
    for segment in files:
        first.setdefault(segment.timeline, segment.segno)
    for backup in backups:
        manifest = backup.manifest
        if not manifest.stop_lsn or not manifest.timeline:
            continue
        oldest = first.get(manifest.timeline)
        if oldest is not None and lsn_to_segno(manifest.stop_lsn, seg_size) >= oldest:
            return backup, (manifest.stop_lsn, manifest.timeline)
    start = files[0]
    return None, (format_lsn((start.segno or 0) * seg_size), start.timeline)


def wal_status(cfg: Config, destination: Optional[str] = None, now: Optional[datetime] = None,
               archive: Optional[WalArchive] = None) -> Dict[str, Any]:
    """What the archive holds: segments, the newest one and its age, the gaps, refused records.

    ``exists`` is False when nothing was ever archived (health and metrics then say nothing about WAL)."""
    now = now or utc_now()
    own = archive is None
    archive = archive or WalArchive(cfg, destination)
    try:
        segments = archive.segments()
        refused = archive.refused()
    finally:
        if own:
            archive.close()
    status: Dict[str, Any] = {"exists": bool(segments or refused), "where": archive.where,
                              "segments": len([s for s in segments if s.kind == "segment"]),
                              "files": len(segments), "bytes": sum(max(s.stored_size, 0) for s in segments),
                              "refused": [{"record": key, "reason": why} for key, why in refused],
                              "gaps": [], "newest": None, "newest_age_seconds": None, "reached_lsn": None,
                              "from_lsn": None, "from_backup": None, "timelines": []}
    files = [s for s in segments if s.kind in ("segment", "partial")]
    if files:
        newest = max(files, key=lambda s: (s.modified_at, s.timeline, s.segno or 0))
        status["newest"] = {"wal": newest.wal, "modified_at": iso(newest.modified_at),
                            "archived_at": iso(newest.archived_at)}
        status["newest_age_seconds"] = max(0, int((now - newest.modified_at).total_seconds()))
    repo = open_repository(cfg, destination)
    try:
        backups = [b for kind in PHYSICAL for b in repo.backups(kind=kind)]
    except BackupError:
        backups = []
    finally:
        repo.close()
    backups.sort(key=lambda b: (b.created_at, b.id))
    backup, start = _baseline(segments, backups)
    if start is not None:
        walk: Continuity = continuity(segments, start[0], start[1])
        status.update(gaps=walk.gaps, reached_lsn=walk.reached_lsn, from_lsn=walk.start_lsn,
                      from_backup=backup.id if backup else None, timelines=walk.timelines,
                      last=walk.last.wal if walk.last else None)
    return status


def verify_wal(cfg: Config, destination: Optional[str] = None, level: str = "archive") -> Dict[str, Any]:
    """``verify --wal``: continuity (gaps, timeline switches), refused records, and every data object read back
    (``checksum``: the stored bytes' sha256; ``archive`` and above: also decrypted and decompressed to the
    raw file's sha256). One result in the shape of ``verify``'s."""
    archive = WalArchive(cfg, destination)
    try:
        status = wal_status(cfg, destination, archive=archive)
        bad: List[Dict[str, str]] = []
        for segment in archive.segments():
            problem = _check_stored(archive, segment) if level == "checksum" else archive.check_data(segment)
            if problem:
                bad.append({"wal": segment.wal, "reason": problem})
    finally:
        archive.close()
    problems = []
    if status["gaps"]:
        problems.append("%d WAL file%s missing after %s: %s" % (
            len(status["gaps"]), "" if len(status["gaps"]) == 1 else "s", status["reached_lsn"],
            ", ".join(status["gaps"][:5]) + (" ..." if len(status["gaps"]) > 5 else "")))
    if bad:
        problems.append("%d archived file%s do not verify: %s: %s" % (
            len(bad), "" if len(bad) == 1 else "s", bad[0]["wal"], bad[0]["reason"]))
    if status["refused"]:
        problems.append("%d record%s not trusted: %s %s" % (
            len(status["refused"]), "" if len(status["refused"]) == 1 else "s",
            status["refused"][0]["record"], status["refused"][0]["reason"]))
    if problems:
        details = "; ".join(problems)
    elif not status["exists"]:
        details = "no WAL archived in %s" % status["where"]
    else:
        details = "%d WAL files, contiguous from %s to %s (timeline%s %s); newest %s" % (
            status["files"], status["from_lsn"], status["reached_lsn"],
            "" if len(status["timelines"]) == 1 else "s", ", ".join(str(t) for t in status["timelines"]),
            (status["newest"] or {}).get("wal"))
    return dict(status, id="wal", file=None, ok=not problems, level=level, details=details, bad=bad)


def _check_stored(archive: WalArchive, segment: Segment) -> Optional[str]:
    key = "wal/%s" % segment.stored
    try:
        if archive.store.stat(key) is None:
            return "data object %s is missing" % segment.stored
        size, sha = archive.store.sha256(key)
    except BackupError as exc:
        return str(exc)
    if (size, sha) != (segment.stored_size, segment.stored_sha256):
        return "data object %s does not match its record (stored sha256 or size)" % segment.stored
    return None


__all__ = ["wal_push", "wal_fetch", "wal_status", "verify_wal", "DEFAULT_SEGMENT_SIZE"]
