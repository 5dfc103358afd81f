# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog of one destination: list, verify, restore and retention read straight from it.

A backup exists at a destination when its manifest does (manifests are uploaded last). The manifests
are read into ordinary ``Backup`` objects whose paths are keys (``full/<id>.json``), so the retention
planner, the listing shape and the restore path are the local ones.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Tuple

from ..config.settings import ALL_KINDS
from ..core.clock import iso, parse_moment, utc_now
from ..core.errors import NotFound, VerifyError
from ..core.fsutil import create_private, ensure_private_dir
from ..core.runlog import RunLog
from ..model.manifest import (MANIFEST_SUFFIX, Backup, Copy, FileEntry, Manifest, ManifestError, Verification,
                              load_backup, parse_manifest_bytes)
from ..repo.catalog import Repository
from ..store import find_settings, open_destination
from ..store.base import Destination, ObjectInfo
from .sync import manifest_key, object_key, remote_manifest_bytes, stream_sha256

SCRATCH_DIR = ".scratch"


class RemoteCatalog:
    """Manifests and objects of one destination, read once."""

    def __init__(self, cfg: Any, name: str) -> None:
        self.cfg = cfg
        self.settings = find_settings(cfg, name)
        self.dest: Destination = open_destination(self.settings)
        self.objects: Dict[str, ObjectInfo] = {}
        self.backups: List[Backup] = []
        self.refresh()

    def refresh(self) -> None:
        self.objects = {o.key: o for o in self.dest.list("") if o.key.split("/")[0] in ALL_KINDS}
        found = []
        for key in sorted(self.objects):
            if key.endswith(MANIFEST_SUFFIX) and key.count("/") == 1 and not posixpath.basename(key).startswith("."):
                backup = self._load(key)
                if backup is not None:
                    found.append(backup)
        found.sort(key=lambda b: (b.created_at, b.id))
        self.backups = found

    def _load(self, key: str) -> Optional[Backup]:
        try:
            manifest = parse_manifest_bytes(self.dest.read_bytes(key, limit=16 * 1024 * 1024), self.dest.uri(key))
        except ManifestError:
            return None
        if posixpath.basename(key) != manifest.id + MANIFEST_SUFFIX:
            return None
        missing = [f.name for f in manifest.files
                   if (self.objects.get(self.key(manifest, f)) or ObjectInfo("", -1)).size != f.size]
        if missing and manifest.status == "ok":
            # Listed as bad, never offered for restore: a data object is gone or of the wrong size.
            manifest.verification = Verification.from_dict({
                "ok": False, "level": "listing", "at": iso(utc_now()),
                "details": "missing or wrong size at destination %r: %s" % (self.dest.name, ", ".join(missing))})
        return Backup(manifest, key)

    @staticmethod
    def key(manifest: Manifest, entry: FileEntry) -> str:
        return "%s/%s" % (manifest.kind, entry.name)

    def good(self, kind: Optional[str] = None, database: Optional[str] = None, include_bad: bool = False) -> List[Backup]:
        return [b for b in self.backups if (include_bad or b.good) and (not kind or b.kind == kind)
                and (not database or b.database == database)]

    def summary(self, backup: Backup) -> Dict[str, Any]:
        row = backup.summary()
        row["files"] = [self.dest.uri(self.key(backup.manifest, f)) for f in backup.manifest.files]
        row["manifest"] = self.dest.uri(backup.manifest_path)
        row["destination"] = self.dest.name
        return row

    def find(self, selector: str, kind: Optional[str] = None, database: Optional[str] = None,
             before: Optional[str] = None, allow_bad: bool = False) -> Backup:
        where = "destination %r (%s)" % (self.dest.name, self.dest.uri())
        if before is not None or selector == "latest":
            chosen = self.good(kind=kind or "full", database=database)
            if before is not None:
                moment = parse_moment(before, self.cfg.timezone)
                chosen = [b for b in chosen if b.created_at < moment]
            if not chosen:
                of = " of %s" % database if database else ""
                until = " before %s" % before if before else ""
                raise NotFound("no good %s backup%s%s in %s" % (kind or "full", of, until, where))
            return chosen[-1]
        for backup in self.backups:
            if backup.id == selector or posixpath.basename(backup.manifest_path) == selector:
                if not backup.good and not allow_bad:
                    raise NotFound("backup %s at %s is marked bad (%s)"
                                   % (selector, where, backup.bad_reason))
                return backup
        raise NotFound("no backup with id %r in %s (see 'seawall-pgbackup list --destination %s')"
                       % (selector, where, self.dest.name))

    def leftovers(self) -> List[ObjectInfo]:
        named = {self.key(b.manifest, f) for b in self.backups for f in b.manifest.files}
        named.update(b.manifest_path for b in self.backups)
        stems = [k[:-len(MANIFEST_SUFFIX)] for k in self.objects if k.endswith(MANIFEST_SUFFIX)]
        return [o for k, o in sorted(self.objects.items())
                if k not in named and not k.endswith(MANIFEST_SUFFIX) and not any(k.startswith(s + ".") for s in stems)]

    # ------------------------------------------------------------------ verify

    def verify_checksums(self, backup: Backup) -> Dict[str, Any]:
        """Stream every object: size and sha256 against the manifest. Returns the verification record."""
        started = utc_now()
        record: Dict[str, Any] = {"level": "checksum", "at": iso(started), "ok": True,
                                  "destination": self.dest.name}
        try:
            for entry in backup.manifest.files:
                key = self.key(backup.manifest, entry)
                if self.dest.head(key) is None:
                    raise VerifyError("%s: object %s is missing" % (backup.id, self.dest.uri(key)))
                size, sha = stream_sha256(self.dest, key)
                if size != entry.size:
                    raise VerifyError("%s: object %s has %d bytes, the manifest recorded %d"
                                      % (backup.id, self.dest.uri(key), size, entry.size))
                if sha != entry.sha256:
                    raise VerifyError("%s: object %s does not match its sha256 (corrupted)"
                                      % (backup.id, self.dest.uri(key)))
            record["details"] = "checksums match (streamed from %s)" % self.dest.uri()
        except VerifyError as exc:
            record.update(ok=False, details=str(exc))
        record["duration_seconds"] = round((utc_now() - started).total_seconds(), 3)
        return record

    def record_verification(self, backup: Backup, record: Dict[str, Any]) -> None:
        """Rewrite the destination's manifest with the new result (still one whole-object put)."""
        backup.manifest.verification = Verification.from_dict(record, self.dest.uri(backup.manifest_path))
        self.dest.put_bytes(backup.manifest_path, remote_manifest_bytes(backup))

    # ------------------------------------------------------------------ download

    def download(self, backup: Backup, root: str) -> Backup:
        """Files and manifest into ``root`` laid out like a backup directory; sha256 checked on the way."""
        folder = os.path.join(root, backup.kind)
        ensure_private_dir(root)
        ensure_private_dir(folder)
        for entry in backup.manifest.files:
            key = self.key(backup.manifest, entry)
            digest = hashlib.sha256()
            size = 0
            with create_private(os.path.join(folder, entry.name)) as handle:
                for chunk in self.dest.read(key):
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if size != entry.size or digest.hexdigest() != entry.sha256:
                raise VerifyError("%s: object %s does not match its manifest (%d bytes, sha256 %s); not restored"
                                  % (backup.id, self.dest.uri(key), size, digest.hexdigest()))
        path = os.path.join(folder, backup.id + MANIFEST_SUFFIX)
        with create_private(path) as handle:
            handle.write(remote_manifest_bytes(backup))
        local = load_backup(path)
        if local is None:
            raise VerifyError("%s: the manifest at %s cannot be read back" % (backup.id, self.dest.uri()))
        return local


def scratch_dir(cfg: Any, name: str) -> str:
    """A private scratch directory inside the backup root (same disk, same permissions), removed afterwards."""
    root = os.path.join(os.path.abspath(cfg.backup_dir), SCRATCH_DIR)
    ensure_private_dir(os.path.abspath(cfg.backup_dir))
    ensure_private_dir(root)
    path = os.path.join(root, "%s-%d-%s" % (name, os.getpid(), utc_now().strftime("%Y%m%dT%H%M%S%f")))
    ensure_private_dir(path)
    return path


def list_remote(cfg: Any, name: str, kind: Optional[str] = None, database: Optional[str] = None) -> List[Dict[str, Any]]:
    catalog = RemoteCatalog(cfg, name)
    return [catalog.summary(b) for b in catalog.good(kind=kind, database=database)]


def verify_remote(cfg: Any, name: str, selector: Optional[str] = None, level: str = "checksum",
                  kind: Optional[str] = None, **options: Any) -> List[Dict[str, Any]]:
    """Verify backups at a destination; checksum streams the objects, deeper levels download to scratch."""
    from .verify import verify  # pylint: disable=import-outside-toplevel

    catalog = RemoteCatalog(cfg, name)
    log = RunLog(Repository(cfg.backup_dir).log_dir)
    targets = [catalog.find(selector, kind=kind, allow_bad=True)] if selector else catalog.good(kind=kind)
    results = []
    for backup in targets:
        if level == "checksum":
            record = catalog.verify_checksums(backup)
        else:
            scratch = scratch_dir(cfg, name)
            try:
                try:
                    local = catalog.download(backup, scratch)
                except VerifyError as exc:
                    record = {"level": level, "at": iso(utc_now()), "ok": False, "details": str(exc)}
                else:
                    record = verify(cfg, local, level, **options)
                record["destination"] = name
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        catalog.record_verification(backup, record)
        results.append(dict({"id": backup.id, "type": backup.kind}, **record))
        if record["ok"]:
            log.info("verify-ok", id=backup.id, level=level, destination=name)
        else:
            log.failure("verify-failed", id=backup.id, level=level, destination=name, step="verify",
                        error=record["details"])
    return results


def fetch_for_restore(cfg: Any, name: str, selector: str, kind: Optional[str], before: Optional[str],
                      database: Optional[str]) -> Tuple[Backup, str]:
    """Download the chosen backup into a scratch directory: (the local Backup, the directory to remove)."""
    catalog = RemoteCatalog(cfg, name)
    backup = catalog.find(selector, kind=kind, database=database if selector == "latest" else None, before=before)
    scratch = scratch_dir(cfg, name)
    try:
        return catalog.download(backup, scratch), scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def cleanup_remote(cfg: Any, name: str, dry_run: bool = False, now: Optional[datetime] = None,
                   tz: Optional[str] = None, leftover_grace: Any = None) -> Dict[str, Any]:
    """The retention planner on one destination's catalog; a doomed copy loses its manifest first."""
    from ..core.duration import parse_duration  # pylint: disable=import-outside-toplevel
    from ..repo.retention import plan_retention, time_zone  # pylint: disable=import-outside-toplevel
    from .cleanup import DEFAULT_LEFTOVER_GRACE, policies_of, schedules_of  # pylint: disable=import-outside-toplevel

    now = now or utc_now()
    zone = tz or cfg.timezone or "UTC"
    time_zone(zone)
    if leftover_grace is None:
        leftover_grace = getattr(cfg, "leftover_grace", None)
    grace: timedelta = DEFAULT_LEFTOVER_GRACE if leftover_grace is None else parse_duration("leftover_grace",
                                                                                            leftover_grace)
    repo = Repository(cfg.backup_dir)
    result: Dict[str, Any] = {"destination": name, "dry_run": bool(dry_run), "now": iso(now), "timezone": zone,
                              "policies": policies_of(cfg), "leftover_grace_seconds": int(grace.total_seconds()),
                              "plan": [], "notes": {}, "kept": [], "to_delete": [], "deleted": [],
                              "leftovers_to_remove": [], "leftovers_removed": [], "leftovers_kept": []}

    def run() -> Dict[str, Any]:
        catalog = RemoteCatalog(cfg, name)
        result["backup_dir"] = catalog.dest.uri()
        backups = catalog.good(include_bad=True)
        plan = plan_retention(backups, result["policies"], now, zone, schedules_of(cfg))
        old = [o.key for o in catalog.leftovers() if o.modified is None or now - o.modified >= grace]
        young = [o.key for o in catalog.leftovers() if o.key not in old]
        result.update(plan=plan.as_dicts(), notes=dict(plan.notes), kept=plan.keep, to_delete=plan.delete,
                      leftovers_to_remove=[catalog.dest.uri(k) for k in old],
                      leftovers_kept=[catalog.dest.uri(k) for k in young])
        if dry_run:
            return result
        log = RunLog(repo.log_dir)
        by_id = {b.id: b for b in backups}
        kept = set(plan.keep)
        protected = {catalog.key(b.manifest, f) for b in backups if b.id in kept for f in b.manifest.files}
        doomed = [(d, by_id[d.id]) for d in plan.decisions if not d.keep]
        for _decision, backup in doomed:  # every manifest first: a half-done run leaves unlisted leftovers only
            catalog.dest.delete(backup.manifest_path)
            _mark_local_copy_removed(repo, backup, name, now)
        for decision, backup in doomed:
            for entry in backup.manifest.files:
                key = catalog.key(backup.manifest, entry)
                if key not in protected:
                    catalog.dest.delete(key)
            result["deleted"].append(backup.id)
            log.info("pruned", id=backup.id, destination=name, reasons="; ".join(decision.reasons))
        for key in old:
            catalog.dest.delete(key)
            result["leftovers_removed"].append(catalog.dest.uri(key))
            log.warning("removed-incomplete", path=catalog.dest.uri(key), by="cleanup", destination=name)
        return result

    if dry_run or not os.path.isdir(repo.root):
        return run()
    with repo.lock(wait_seconds=600):
        return run()


def _mark_local_copy_removed(repo: Repository, backup: Backup, name: str, now: datetime) -> None:
    """The local manifest (if the backup is still kept here) remembers the copy was pruned: sync won't re-upload."""
    local = load_backup(repo.manifest_path(backup.kind, backup.id))
    if local is None:
        return
    copies = [c for c in local.manifest.copies if c.destination != name]
    copies.append(Copy.from_dict({"destination": name, "removed_at": iso(now),
                                  "reason": "retention at the destination"}))
    local.manifest.copies = copies
    local.save()


__all__ = ["RemoteCatalog", "list_remote", "verify_remote", "fetch_for_restore", "cleanup_remote", "object_key",
           "manifest_key"]
