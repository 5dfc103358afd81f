# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove a backup is intact: checksums against the manifest, then the archive read back in full."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

from .binaries import select_tools
from .catalog import Backup, Repository, iso, utc_now
from .compression import open_decompressed
from .config import Config
from .errors import VerifyError
from .logical import CLUSTER_DUMP_END, CLUSTER_DUMP_HEAD
from .pipeline import CHUNK, describe_exit, sha256_file
from .runlog import RunLog

LEVELS = ("checksum", "archive")


def verify_checksums(backup: Backup) -> None:
    """Every file present with the manifest's size and sha256; names the first file that differs."""
    for entry in backup.manifest.get("files", []):
        path = backup.file_path(entry)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise VerifyError("%s: file %s is missing" % (backup.id, path)) from None
        if size != entry["size"]:
            raise VerifyError("%s: file %s has %d bytes, the manifest recorded %d (truncated or replaced)"
                              % (backup.id, path, size, entry["size"]))
        if sha256_file(path) != entry["sha256"]:
            raise VerifyError("%s: file %s does not match its sha256 (corrupted)" % (backup.id, path))


def _check_archive(backup: Backup, entry: Dict[str, Any], cfg: Config) -> str:
    """Decompress fully; pg_restore must read the whole table of contents."""
    path = backup.file_path(entry)
    if entry.get("format") == "plain":
        head, tail = b"", b""
        with open_decompressed(path, entry["compression"]) as src:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                head = head or chunk[:4096]
                tail = (tail + chunk)[-4096:]
        if CLUSTER_DUMP_HEAD not in head or CLUSTER_DUMP_END not in tail:
            raise VerifyError("%s: %s is not a complete pg_dumpall script" % (backup.id, path))
        return "globals script complete"
    major = int((backup.manifest.get("client") or {}).get("major") or 0)
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's pg_dump", tools=("pg_restore",))
    err = tempfile.TemporaryFile()
    listing = tempfile.TemporaryFile()  # a file, not a pipe: a long listing must never block pg_restore
    proc = subprocess.Popen([tools.path("pg_restore"), "--list"], stdin=subprocess.PIPE, stdout=listing, stderr=err)
    try:
        with open_decompressed(path, entry["compression"]) as src:
            # pg_restore --list only reads the table of contents; we still read (and so check) every byte.
            for chunk in iter(lambda: src.read(CHUNK), b""):
                try:
                    proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass
        proc.stdin.close()
    except (EOFError, OSError, ValueError) as exc:
        proc.kill()
        proc.wait()
        raise VerifyError("%s: %s does not decompress: %s" % (backup.id, path, exc)) from None
    code = proc.wait()
    listing.seek(0)
    out = listing.read()
    listing.close()
    err.seek(0)
    if code != 0:
        raise VerifyError("%s: %s" % (backup.id, describe_exit("pg_restore --list", code, err.read().decode(
            "utf-8", "replace"))))
    entries = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln and not ln.startswith(";")]
    if not entries:
        raise VerifyError("%s: %s lists no objects" % (backup.id, path))
    return "%d archive entries" % len(entries)


def verify(cfg: Config, backup: Backup, level: str = "archive") -> Dict[str, Any]:
    """Check ``backup`` and return the verification record (not yet saved)."""
    if level not in LEVELS:
        raise VerifyError("level=%r is not valid: use one of %s" % (level, ", ".join(LEVELS)))
    started = time.monotonic()
    record: Dict[str, Any] = {"level": level, "at": iso(utc_now()), "ok": True}
    details: List[str] = []
    try:
        verify_checksums(backup)
        details.append("checksums match")
        if level == "archive":
            for entry in backup.manifest.get("files", []):
                details.append(_check_archive(backup, entry, cfg))
    except VerifyError as exc:
        record["ok"] = False
        details = [str(exc)]
    record["details"] = "; ".join(details)
    record["duration_seconds"] = round(time.monotonic() - started, 3)
    return record


def verify_and_record(cfg: Config, selector: Optional[str] = None, level: str = "archive",
                      kind: Optional[str] = None) -> List[Dict[str, Any]]:
    """Verify one backup (or every good one when ``selector`` is None) and record each result in its manifest."""
    repo = Repository(cfg.backup_dir)
    log = RunLog(repo.log_dir)
    with repo.lock(wait_seconds=30):
        targets = [repo.find(selector, kind=kind, allow_bad=True)] if selector else repo.backups(kind=kind)
        results = []
        for backup in targets:
            record = verify(cfg, backup, level)
            backup.manifest["verification"] = record
            backup.save()
            results.append({"id": backup.id, "type": backup.kind, **record})
            if record["ok"]:
                log.info("verify-ok", id=backup.id, level=level, seconds=record["duration_seconds"])
            else:
                log.failure("verify-failed", id=backup.id, level=level, step="verify", error=record["details"])
    return results
