# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL operations over the archive (repo/walarchive.py): push and fetch for PostgreSQL, status and verification.

``wal_push`` / ``wal_fetch`` are what archive_command and restore_command run; neither takes the repository
lock. ``wal_status`` is what health and metrics read (newest segment, its age, gaps); ``verify_wal`` also
reads every data object back (``verify --wal``).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Dict, List, Optional

from ..config.settings import Config
from ..core.errors import BackupError
from ..repo.walarchive import DEFAULT_SEGMENT_SIZE, Segment, WalArchive, archive_status
from ..repo.walstream import copy_from_stream, stream_dir


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
        if archive.fetch(walname, dest):
            return True
        return not destination and _from_stream(cfg, walname, dest)
    finally:
        archive.close()


def _from_stream(cfg: Config, walname: str, dest: str) -> bool:
    """When no archive holds ``walname``: wal-receive's stream directory (repo/walstream.py), its completed file or
    its in-progress ``.partial`` (the WAL received since the last completed segment: a lost data directory then
    loses only what pg_receivewal had not received). A file pushed and removed meanwhile is in the archive."""
    if not os.path.lexists(stream_dir(cfg.backup_dir)):
        return False  # no wal-receive here
    if copy_from_stream(cfg.backup_dir, walname, dest):
        return True
    archive = WalArchive(cfg)
    try:
        return archive.fetch(walname, dest)
    finally:
        archive.close()


def wal_status(cfg: Config, destination: Optional[str] = None, now: Optional[datetime] = None,
               archive: Optional[WalArchive] = None) -> Dict[str, Any]:
    """What the archive holds (repo/walarchive.archive_status): segments, newest and its age, gaps, refusals."""
    return archive_status(cfg, destination, now, archive)


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
