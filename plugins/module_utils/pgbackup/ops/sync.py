# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copies of complete local backups to the configured destinations: one store to another.

The backup directory's store is read and the destination's store written through the same Store
interface (store/base.py), with the same keys (``full/<id>.dump.gz``), so the one catalog
(repo/catalog.py) reads the copies exactly like the originals.

Order for one backup and one destination: every data file (skipped when the object is already there
with the same size and sha256, so a re-run resumes where the last one stopped), each checked after its
upload (size as the service reports it, then sha256 of the object streamed back, or the service's own
check where it makes one), then the manifest, last: a half-copied backup has no manifest at the
destination and is never listed there. Then the copy is recorded in the local manifest (atomically,
under the repository lock), with the key its files are encrypted under. A failed copy never touches the local backup.

A recorded copy under another key than the local backup's (a ``rekey`` ran since, or a record from before
copies named their key) is stale: it is uploaded again. After every upload the destination's objects of that
backup that the new manifest does not name (files under an old key, of an interrupted copy) are deleted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional

from ..config.destinations import DestinationSettings
from ..core.clock import iso, utc_now
from ..core.errors import BackupError
from ..core.runlog import RunLog
from ..core.testpoints import pause
from ..model.manifest import MANIFEST_SUFFIX, Backup, Copy, FileEntry
from ..repo.catalog import Repository, is_our_file, open_repository, stored_manifest_bytes
from ..store import open_destination, remote_settings
from ..store.base import DestinationError, Store

LOCK_WAIT_SECONDS = 600


def _already_there(dest: Store, key: str, entry: FileEntry) -> bool:
    info = dest.stat(key)
    if info is None or info.size != entry.size:
        return False
    metadata = dest.metadata(key)
    if metadata is None:
        return False  # a directory keeps no metadata: copy again (cheap)
    return metadata.get("sha256") == entry.sha256


def _check_upload(dest: Store, settings: DestinationSettings, key: str, entry: FileEntry,
                  reported_size: int) -> None:
    if reported_size != entry.size:
        raise dest.error("check", key, "the service reports %d bytes, the file has %d" % (reported_size, entry.size))
    if settings.verify_upload == "stream":
        size, sha = dest.sha256(key)
        if size != entry.size or sha != entry.sha256:
            raise dest.error("check", key, "the object read back differs from the file (%d bytes, sha256 %s; "
                                           "expected %d bytes, %s)" % (size, sha, entry.size, entry.sha256))


def copy_backup(source: Repository, backup: Backup, dest: Store, settings: DestinationSettings) -> Dict[str, Any]:
    """Copy ``backup`` from ``source`` to ``dest`` under the same keys (data files, checks, manifest last);
    returns the copy record."""
    uploaded: List[str] = []
    for entry in backup.manifest.files:
        key = source.file_key(backup, entry)
        if _already_there(dest, key, entry):
            continue
        path = source.store.local_path(key)
        if path is not None:  # a file: the drivers upload it in parts from disk
            info = dest.put_file(key, path, entry.size, entry.sha256)
        else:
            with source.store.open(key) as stream:
                info = dest.write(key, stream, entry.size, entry.sha256)
        _check_upload(dest, settings, key, entry, info.size)
        uploaded.append(key)
    pause("copy-uploaded")  # crash tests: the data files are there, the destination's manifest is not yet new
    data = stored_manifest_bytes(backup, source.trust)
    key = source.key_of(backup)
    dest.put_bytes(key, data)
    info = dest.stat(key)
    if info is None or info.size != len(data):
        raise dest.error("check", key, "the manifest is not there whole after its upload")
    return {"destination": dest.name, "type": dest.kind, "uri": dest.uri(key), "copied_at": iso(utc_now()),
            "key_id": current_key(backup), "uploaded": len(uploaded)}


def remove_unnamed_objects(dest: Store, backup: Backup) -> List[str]:
    """Delete the destination's objects of ``backup`` that its manifest (already uploaded) does not name: the
    files of an earlier copy under another key, or of an interrupted one. Only names of ours for this backup id."""
    named = {"%s/%s" % (backup.kind, entry.name) for entry in backup.manifest.files}
    named.add("%s/%s%s" % (backup.kind, backup.id, MANIFEST_SUFFIX))
    prefixes = ("%s/%s." % (backup.kind, backup.id), "%s/.%s." % (backup.kind, backup.id))
    removed = []
    # the folder is listed (some object stores list by path segment only), then filtered by the id's prefixes
    for info in dest.list(backup.kind + "/"):
        if info.key.startswith(prefixes) and info.key.count("/") == 1 and info.key not in named \
                and is_our_file(info.key):
            dest.delete(info.key)
            removed.append(info.key)
    return removed


def current_key(backup: Backup) -> Optional[str]:
    """The key id the backup's files are encrypted under now (None: not encrypted)."""
    encryption = backup.manifest.encryption
    return encryption.key_id if encryption else None


def copy_state(backup: Backup, name: str) -> str:
    """``none`` (no copy recorded at ``name``), ``removed`` (its retention removed it), ``stale`` (under
    another key than the local backup, or of unknown key while it is encrypted) or ``current``."""
    found = [c for c in backup.manifest.copies if c.destination == name]
    if not found:
        return "none"
    copy = found[-1]
    if copy.removed_at is not None:
        return "removed"
    return "current" if copy.key_id == current_key(backup) else "stale"


def drop_copy(local: Repository, backup: Backup, name: str) -> Optional[Backup]:
    """Forget the copy at ``name`` (its files there are not what the local manifest says): the next
    ``sync`` uploads it again. Call under the lock."""
    current = local.reload(backup)
    if current is None:
        return None
    current.manifest.copies = [c for c in current.manifest.copies if c.destination != name]
    local.save(current)
    return current


def record_copy(local: Repository, backup: Backup, record: Dict[str, Any]) -> Optional[Backup]:
    """Add or replace this destination's entry in the local manifest (atomically). Call under the lock."""
    current = local.reload(backup)
    if current is None:
        return None  # deleted by cleanup meanwhile: nothing to record
    copies = [c for c in current.manifest.copies if c.destination != record["destination"]]
    copies.append(Copy.from_dict({k: v for k, v in record.items() if k not in ("uploaded", "removed")},
                                 current.manifest_path))
    current.manifest.copies = copies
    local.save(current)
    return current


def forget_copy(local: Repository, backup: Backup, name: str, now: datetime) -> None:
    """The destination's retention removed its copy: the local manifest (if the backup is still kept here)
    remembers, so sync does not upload it again. Call under the lock when the backup directory exists."""
    if local.root is None:
        return
    current = local.reload(Backup(backup.manifest, local.manifest_path(backup.kind, backup.id)))
    if current is None:
        return
    copies = [c for c in current.manifest.copies if c.destination != name]
    copies.append(Copy(destination=name, removed_at=now, reason="retention at the destination"))
    current.manifest.copies = copies
    local.save(current)


def copy_recorded(backup: Backup, name: str) -> bool:
    """A copy was made to ``name`` (or deliberately removed there by its retention)."""
    return any(c.destination == name for c in backup.manifest.copies)


def _targets(cfg: Any, destination: Optional[str]) -> List[DestinationSettings]:
    """The enabled destinations, or the one named (enabled or not: naming it asks for it)."""
    targets = [s for s in remote_settings(cfg) if destination is None or s.name == destination]
    if destination is not None and not targets:
        from ..store import find_settings  # pylint: disable=import-outside-toplevel
        targets = [find_settings(cfg, destination)]
    return targets


def plan_sync(cfg: Any, destination: Optional[str] = None) -> Dict[str, Any]:
    """What ``sync`` would copy: per destination, the good local backups with no recorded copy there.

    Reads the local catalog only (the recorded copies), so it needs no credentials and touches nothing.
    """
    targets = _targets(cfg, destination)
    backups = open_repository(cfg).backups() if targets else []
    plan: Dict[str, Any] = {"dry_run": True, "destinations": [s.name for s in targets], "to_copy": [], "present": 0}
    for settings in targets:
        for backup in backups:
            state = copy_state(backup, settings.name)
            if state in ("current", "removed"):
                plan["present"] += 1
            else:
                plan["to_copy"].append(dict({"id": backup.id, "destination": settings.name, "size": backup.size},
                                            **({"stale": True} if state == "stale" else {})))
    return plan


def sync(cfg: Any, only: Optional[List[Backup]] = None, destination: Optional[str] = None) -> Dict[str, Any]:
    """Copy every good local backup (or ``only`` these) that a destination lacks; idempotent.

    Every destination is tried; failures are collected and raised together at the end (naming each
    destination) after the successful copies were recorded.
    """
    targets = _targets(cfg, destination)
    result: Dict[str, Any] = {"copied": [], "present": 0, "failed": [], "destinations": [s.name for s in targets]}
    if not targets:
        return result  # no destination: nothing is touched
    repo = open_repository(cfg)
    log = RunLog(repo.log_dir)
    # The lock is held only to record a copy: a long upload never makes a scheduled backup wait or fail.
    # A backup deleted locally by cleanup meanwhile still completes its copy (its files stay readable while open, or the
    # upload fails cleanly before the manifest); the record is then simply skipped.
    backups = [repo.reload(b) for b in only] if only is not None else repo.backups()
    for settings in targets:
        try:
            dest = open_destination(settings)
        except BackupError as exc:
            result["failed"].append({"destination": settings.name, "error": str(exc)})
            log.failure("copy-failed", destination=settings.name, step="copy", error=str(exc))
            continue
        try:
            for backup in backups:
                if backup is None or not backup.good:
                    continue
                state = copy_state(backup, settings.name)
                if state in ("current", "removed"):
                    result["present"] += 1
                    continue
                record = copy_backup(repo, backup, dest, settings)
                # files of this backup the manifest now there does not name (under an old key, of a copy
                # interrupted or forgotten) go once that manifest is up
                record["removed"] = len(remove_unnamed_objects(dest, backup))
                with repo.lock(wait_seconds=LOCK_WAIT_SECONDS):
                    record_copy(repo, backup, record)
                result["copied"].append(dict(record, id=backup.id))
                log.info("copied", id=backup.id, destination=settings.name, uri=record["uri"],
                         uploaded=record["uploaded"], **({"stale": True} if state == "stale" else {}))
        except BackupError as exc:  # a destination's failure (or its bad credentials file) stops only that one
            result["failed"].append({"destination": settings.name, "error": str(exc)})
            log.failure("copy-failed", destination=settings.name, step="copy", error=str(exc))
        finally:
            dest.close()
    return result


def copy_new_backup(cfg: Any, backup: Backup) -> Dict[str, Any]:
    """After ``create``: copy the new backup everywhere; raise one error naming every failed destination."""
    result = sync(cfg, only=[backup])
    raise_failures(result, "backup %s is complete and kept in %s, but " % (backup.id, cfg.backup_dir))
    return result


def raise_failures(result: Dict[str, Any], lead: str = "") -> None:
    failed = result.get("failed") or []
    if failed:
        names = ", ".join(repr(f["destination"]) for f in failed)
        raise DestinationError("%sthe copy to destination %s failed: %s" % (lead, names, failed[0]["error"]),
                               step="copy", hint="sync")
