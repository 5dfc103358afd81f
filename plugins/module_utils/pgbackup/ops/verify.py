# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove a backup is intact: checksums against the manifest, then the archive read back in full."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from ..codec.integrity import verify_checksums
from ..codec.stored import open_stored
from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import iso, utc_now
from ..core.errors import (BackupError, ClientToolError, ConfigError, ConnectionFailed, LockedError, ResourceError,
                           VerifyError)
from ..core.runlog import RunLog
from ..model.manifest import PARTIAL_SUFFIX, Backup, FileEntry, Verification, load_backup, slug
from ..pg.binaries import any_psql, select_tools
from ..pg.client import execute, query, quote_ident
from ..pg.pipeline import CHUNK, describe_exit
from ..pg.restorer import Restorer
from ..pg.snapshot import count_rows
from ..repo.catalog import Repository
from .backup import CLUSTER_DUMP_END, CLUSTER_DUMP_HEAD

LEVELS = ("checksum", "archive", "restore")
# Failures of the surroundings, not of the backup: raised to the caller, never recorded in the manifest.
UNVERIFIABLE = (ConnectionFailed, ClientToolError, ConfigError, LockedError, ResourceError)


def _check_archive(backup: Backup, entry: FileEntry, cfg: Config) -> str:
    """Decompress fully; pg_restore must read the whole table of contents."""
    path = backup.file_path(entry)
    if entry.format == "plain":
        head, tail = b"", b""
        try:
            with open_stored(backup, entry, cfg) as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    head = head or chunk[:4096]
                    tail = (tail + chunk)[-4096:]
        except (EOFError, OSError, ValueError) as exc:
            raise VerifyError("%s: %s does not decompress: %s" % (backup.id, path, exc)) from None
        if CLUSTER_DUMP_HEAD not in head or CLUSTER_DUMP_END not in tail:
            raise VerifyError("%s: %s is not a complete pg_dumpall script" % (backup.id, path))
        return "globals script complete"
    major = (backup.manifest.client.major if backup.manifest.client else None) or 0
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's pg_dump", tools=("pg_restore",))
    err = tempfile.TemporaryFile()
    listing = tempfile.TemporaryFile()  # a file, not a pipe: a long listing must never block pg_restore
    proc = subprocess.Popen([tools.path("pg_restore"), "--list"], stdin=subprocess.PIPE, stdout=listing, stderr=err)
    try:
        with open_stored(backup, entry, cfg) as src:
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


def _check_restore(cfg: Config, backup: Backup, server: DbTarget, probes: Sequence[str],
                   with_globals: bool, record: Dict[str, Any]) -> str:
    """Restore into a scratch database, compare row counts with the backup's, run the probes, drop it."""
    if backup.kind not in ("full", "schema"):
        raise ConfigError("%s: the restore level needs a full or schema backup, not %s" % (backup.id, backup.kind))
    scratch = server.for_database(("seawall_verify_" + slug(backup.id))[:63])
    psql = any_psql(cfg.pg_bin_dir)
    try:
        try:
            result = Restorer(cfg, backup, scratch, clean=True, with_globals=with_globals).run()
        except UNVERIFIABLE:
            raise  # the server, the tools or the settings failed, not the backup: nothing is recorded
        except BackupError as exc:
            raise VerifyError("%s: restore failed: %s" % (backup.id, exc)) from None
        record["rto_seconds"] = result.seconds
        details = ["restored %d objects into %s on %s in %.1f s"
                   % (result.objects or 0, scratch.dbname, server.hostinfo, result.seconds)]
        recorded = backup.manifest.table_rows
        if backup.kind == "full" and recorded is not None:
            counts = count_rows(psql, scratch)
            wrong = ["%s has %s rows, the backup recorded %d" % (k, counts.get(k, "no"), v)
                     for k, v in sorted(recorded.items()) if counts.get(k) != v]
            if wrong:
                raise VerifyError("%s: restored rows differ: %s" % (backup.id, "; ".join(wrong[:5])))
            details.append("%d tables with the recorded row counts" % len(recorded))
        for probe in probes:
            try:
                answer = query(psql, scratch, probe)
            except BackupError as exc:  # a probe that cannot run says nothing about the backup
                raise ConfigError("probe %r cannot run on the restored database: %s" % (probe, exc),
                                  step="probe") from None
            if answer != [["t"]]:
                raise VerifyError("%s: probe %r returned %s, not true" % (backup.id, probe, answer))
        if probes:
            details.append("%d probes true" % len(probes))
        return "; ".join(details)
    finally:
        try:
            execute(psql, scratch.for_database("postgres"), "DROP DATABASE IF EXISTS %s WITH (FORCE)"
                    % quote_ident(scratch.dbname or ""))
        except BackupError:
            pass
        scratch.close()


def verify(cfg: Config, backup: Backup, level: str = "archive", server: Optional[DbTarget] = None,
           probes: Sequence[str] = (), with_globals: bool = False) -> Dict[str, Any]:
    """Check ``backup`` up to ``level`` and return the verification record (not yet saved)."""
    if level not in LEVELS:
        raise VerifyError("level=%r is not valid: use one of %s" % (level, ", ".join(LEVELS)))
    started = time.monotonic()
    record: Dict[str, Any] = {"level": level, "at": iso(utc_now()), "ok": True}
    details: List[str] = []
    try:
        verify_checksums(backup)
        details.append("checksums match")
        if level in ("archive", "restore"):
            for entry in backup.manifest.files:
                details.append(_check_archive(backup, entry, cfg))
        if level == "restore":
            if server is None:
                server = DbTarget(cfg.require_database_url())
            details.append(_check_restore(cfg, backup, server, probes, with_globals, record))
    except VerifyError as exc:
        record["ok"] = False
        details = [str(exc)]
    record["details"] = "; ".join(details)
    record["duration_seconds"] = round(time.monotonic() - started, 3)
    return record


def verify_and_record(cfg: Config, selector: Optional[str] = None, level: str = "archive",
                      kind: Optional[str] = None, server: Optional[DbTarget] = None, probes: Sequence[str] = (),
                      with_globals: bool = False) -> List[Dict[str, Any]]:
    """Verify one backup (or every good one when ``selector`` is None) and record each result in its manifest.

    The lock is held only to record: a long restore-level check never delays a scheduled backup.
    """
    repo = Repository(cfg.backup_dir)
    log = RunLog(repo.log_dir)
    targets = [repo.find(selector, kind=kind, allow_bad=True)] if selector else repo.backups(kind=kind)
    results = []
    for backup in targets:
        record = verify(cfg, backup, level, server=server, probes=probes, with_globals=with_globals)
        with repo.lock(wait_seconds=600):
            current = load_backup(backup.manifest_path)
            if current is None:
                raise VerifyError("%s was removed while it was being verified" % backup.id)
            current.manifest.verification = Verification.from_dict(record, current.manifest_path)
            current.save()
        results.append(dict({"id": backup.id, "type": backup.kind}, **record))
        if record["ok"]:
            log.info("verify-ok", id=backup.id, level=level, seconds=record["duration_seconds"])
        else:
            log.failure("verify-failed", id=backup.id, level=level, step="verify", error=record["details"])
    if not selector:
        results.extend(_orphans(repo, kind, log))
    return results


def _orphans(repo: Repository, kind: Optional[str], log: RunLog) -> List[Dict[str, Any]]:
    """Data files no manifest names: a deleted manifest shows here (a running backup's .partial does not)."""
    found = []
    for path in repo.leftovers():
        folder = os.path.basename(os.path.dirname(path))
        if path.endswith(PARTIAL_SUFFIX) or os.path.basename(path).startswith(".") or (kind and folder != kind):
            continue
        details = "%s: no manifest names this file (an interrupted backup, or its manifest was deleted)" % path
        found.append({"id": None, "file": path, "type": folder, "ok": False, "details": details})
        log.failure("verify-failed", path=path, step="verify", error=details)
    return found
