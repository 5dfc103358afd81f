# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``rekey``: re-encrypt chosen backups to the newest key (or the configured age recipients).

Per backup, under the repository lock: checksums first; each file is decrypted with its old key and
encrypted with the new one into a new ``.partial`` file (the compressed bytes are not touched); the
copy is verified (sha256 of what is on disk, authentication with the new key, the same compressed
bytes as before, decompressed to the end); only then is it renamed, the manifest rewritten
atomically, and the old files removed. Interrupted anywhere, the manifest names complete files
under one key: the old ones until the manifest is rewritten, the new ones after. Before it touches a
backup, the run removes the files of that backup id that its manifest does not name (a killed rekey's
copies and partials: a backup still being written has no manifest yet).

A backup is rewritten when its key is not the newest, and also (migration to authenticated backups) when
its manifest is not signed while signing is configured, or its files are in a format without the binding
to their backup. Then every destination holding a copy gets the new files and manifest, and its objects
of that backup under the old key are deleted (ops/sync.py); a destination that fails loses its copy
record (the next ``sync`` uploads again) and is named in the error, the local rekey stands.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

from ..codec.compression import decompressing_reader
from ..codec.crypto import SUFFIX, Binding, is_bound
from ..codec.integrity import verify_checksums
from ..codec.keyring import Keyring, load_keyring
from ..codec.stored import Sealing, StoredWriter, binding_of, open_decrypted, sealing_for
from ..core.clock import parse_moment, utc_now
from ..core.errors import BackupError, ConfigError, VerifyError, file_error
from ..core.fsutil import create_private, describe_os_error, fsync_dir, remove_quietly
from ..core.runlog import RunLog
from ..core.testpoints import pause
from ..model.manifest import MANIFEST_SUFFIX, Backup, Encryption, FileEntry, Rekeying
from ..pg.pipeline import CHUNK
from ..repo.catalog import Repository, is_our_file, open_repository
from ..store import find_settings, open_destination
from .sync import copy_backup, copy_state, drop_copy, raise_failures, record_copy, remove_unnamed_objects

_CRYPTO_SUFFIXES = tuple(SUFFIX.values())


class _Hashing(io.RawIOBase):
    """Pass reads through and hash them."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        if not data:
            return 0
        self.digest.update(data)
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
            super().close()


def rekeyed_name(name: str, suffix: str, taken) -> str:
    """A new file name for the re-encrypted copy: never the old name, never an existing file."""
    base = name
    for old in _CRYPTO_SUFFIXES:
        if base.endswith(old):
            base = base[:-len(old)]
            break
    stem, dot, last = base.rpartition(".")
    if dot and last.startswith("rekey") and last[5:].isdigit():
        base = stem
    candidates = [base + suffix] + ["%s.rekey%d%s" % (base, number, suffix) for number in range(1, 10000)]
    for candidate in candidates:
        if candidate != name and not taken(candidate):
            return candidate
    raise BackupError("no free file name for the re-encrypted copy of %s" % name, step="rekey")


def _same_keys(record: Encryption, new: Dict[str, Any]) -> bool:
    return record.algorithm == new["algorithm"] and (
        sorted(record.key_ids or [record.key_id]) == sorted(new.get("key_ids") or [new["key_id"]]))


def same_key(record: Optional[Encryption], sealing: Sealing) -> bool:
    """The files are under ``sealing``'s key(s), in its format (an old, unbound format is rewritten even under
    the same key: list says "rekey")."""
    new = sealing.record()
    return bool(record) and is_bound(record) == is_bound(new) and _same_keys(record, new)  # type: ignore[arg-type]


def rewrite_reason(repo: Repository, backup: Backup, sealing: Sealing) -> Optional[str]:
    """Why ``backup`` is to be rewritten under ``sealing`` (None: it is current and kept as it is)."""
    old = backup.manifest.encryption
    new = sealing.record()
    if old is not None and not is_bound(old) and is_bound(new) and _same_keys(old, new):
        return "format"  # files not bound to their backup: a replay under another manifest would decrypt
    if not same_key(old, sealing):
        return "key"
    auth = backup.manifest.auth
    if auth is None and repo.trust.active:
        return "unsigned"
    if auth is not None and repo.trust.signer_id and auth.key_id != repo.trust.signer_id:
        return "signature"  # signed under an older key: once that key is retired, nothing else may need it
    return None


def _describe(reason: str, count: int, old_key: Optional[str], sealing: Sealing, done: bool) -> str:
    verb = "re-encrypted" if done else "would re-encrypt"
    if reason == "key":
        return "%s %d file(s) from key id %s to %s" % (verb, count, old_key or "none (unencrypted)", sealing.key_id)
    why = {"unsigned": "its manifest is not signed", "signature": "its manifest is signed with another key",
           "format": "its files are not bound to the backup"}[reason]
    return "%s %d file(s) under key id %s (%s)" % (verb, count, sealing.key_id, why)


def remove_crash_leftovers(repo: Repository, backup: Backup) -> List[str]:
    """Files of ``backup``'s id in its folder that its manifest does not name: a killed rekey's new copies,
    partials and manifest temp files (or the old files it had not removed yet). Call under the lock."""
    folder = repo.kind_dir(backup.kind)
    named = {e.name for e in backup.manifest.files} | {backup.id + MANIFEST_SUFFIX}
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return removed
    for name in names:
        if name in named or not (name.startswith(backup.id + ".") or name.startswith("." + backup.id + ".")):
            continue
        if is_our_file("%s/%s" % (backup.kind, name)) and not os.path.islink(os.path.join(folder, name)):
            remove_quietly(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    if removed:
        fsync_dir(folder)
    return removed


def _copy(backup: Backup, entry: FileEntry, ring: Keyring, sealing: Sealing, dest: str) -> FileEntry:
    """Write ``dest`` + .partial re-encrypted, verify it, rename it; return the new file entry."""
    partial = dest + ".partial"
    label = "%s file %s" % (backup.id, entry.name)
    old = backup.manifest.encryption_of(entry)
    try:
        source = _Hashing(open_decrypted(backup.file_path(entry), old, ring, label, backup.id,
                                         binding_of(backup, entry)))
    except ValueError as exc:
        raise VerifyError("%s cannot be decrypted: %s" % (label, exc)) from None
    out = None
    writer = None
    try:
        remove_quietly(partial)  # a killed run's (the crash cleanup removes it too)
        try:
            out = create_private(partial)
        except OSError as exc:
            raise file_error("cannot create " + describe_os_error(exc, partial), exc, "rekey") from None
        # The copy is bound to its new name: the name the rewritten manifest will give it.
        new_binding = binding_of(backup, os.path.basename(dest))
        writer = StoredWriter(out, partial, "rekey", sealing, new_binding)
        try:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                writer.write(chunk)
        except (EOFError, ValueError) as exc:
            raise VerifyError("%s cannot be decrypted: %s" % (label, exc)) from None
        writer.close()
        out.flush()
        os.fsync(out.fileno())
        out.close()
        _verify_copy(partial, writer, sealing, ring, source.digest.hexdigest(), entry, label, new_binding)
        pause("rekey-partial")  # crash tests: a verified .partial, not renamed yet
        os.replace(partial, dest)
        fsync_dir(os.path.dirname(dest))
    except BaseException:
        if writer is not None:
            writer.abort()
        if out is not None and not out.closed:
            out.close()
        remove_quietly(partial)
        raise
    finally:
        source.close()
    return replace(entry, name=os.path.basename(dest), size=writer.size, sha256=writer.sha256, encryption=None)


def _verify_copy(path: str, writer: StoredWriter, sealing: Sealing, ring: Keyring, plain_sha256: str,
                 entry: FileEntry, label: str, binding: Binding) -> None:
    """The copy on disk: its sha256, authentication under the new key, the same compressed bytes, decompressible."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != writer.sha256:
        raise VerifyError("%s: the re-encrypted copy does not match what was written (disk fault?)" % label)
    hashing = _Hashing(open_decrypted(path, sealing.record(), ring, label + " (new copy)", binding=binding))
    try:
        buffered = io.BufferedReader(hashing, CHUNK)
        with decompressing_reader(buffered, entry.compression or "none") as plain:
            for _chunk in iter(lambda: plain.read(CHUNK), b""):
                pass
            for _chunk in iter(lambda: buffered.read(CHUNK), b""):
                pass  # anything after the compressed stream is hashed too
    except (EOFError, OSError, ValueError) as exc:
        raise VerifyError("%s: the re-encrypted copy does not read back: %s" % (label, exc)) from None
    if hashing.digest.hexdigest() != plain_sha256:
        raise VerifyError("%s: the re-encrypted copy decrypts to other bytes than the original" % label)


def rekey_backup(repo: Repository, backup: Backup, ring: Keyring, sealing: Sealing) -> Dict[str, Any]:
    """Re-encrypt one backup (hold the lock). Returns its result row."""
    old = backup.manifest.encryption
    row: Dict[str, Any] = {"id": backup.id, "type": backup.kind, "from": old.key_id if old else None,
                           "to": sealing.key_id}
    cleaned = remove_crash_leftovers(repo, backup)
    if cleaned:
        row["removed_leftovers"] = cleaned
    reason = rewrite_reason(repo, backup, sealing)
    if reason is None:
        return dict(row, changed=False, details="already under key id %s" % sealing.key_id)
    verify_checksums(backup)
    directory = backup.directory
    created: List[str] = []
    new_entries = []
    try:
        for entry in backup.manifest.files:
            name = rekeyed_name(entry.name, sealing.suffix,
                                lambda n: os.path.exists(os.path.join(directory, n)) or n in created)
            new_entries.append(_copy(backup, entry, ring, sealing, os.path.join(directory, name)))
            created.append(name)
            pause("rekey-copied")  # crash tests: a new copy written, the manifest still names the old files
        old_paths = [backup.file_path(e) for e in backup.manifest.files]
        history = backup.manifest.rekeyed + [Rekeying(at=utc_now(), from_key=old.key_id if old else None,
                                                      to_key=sealing.key_id)]
        # The copies at destinations hold the old files until they are uploaded again: no key recorded makes
        # them stale for rekey and sync alike, even when killed before that upload.
        copies = [replace(c, key_id=None) if c.removed_at is None else c for c in backup.manifest.copies]
        manifest = replace(backup.manifest, files=new_entries, rekeyed=history, copies=copies,
                           encryption=Encryption.from_dict(sealing.record()))
        repo.save(Backup(manifest, backup.manifest_path))  # from here on the new copies are the backup
    except BaseException:
        for name in created:
            remove_quietly(os.path.join(directory, name))
        raise
    backup.manifest = manifest
    pause("rekey-saved")  # crash tests: the manifest names the new copies, the old files are still there
    for path in old_paths:
        if path not in {backup.file_path(e) for e in new_entries}:
            remove_quietly(path)
    fsync_dir(directory)
    pause("rekey-removed")  # crash tests: the local backup is done, its copies at destinations are not
    return dict(row, changed=True, details=_describe(reason, len(new_entries), row["from"], sealing, True))


def reach_copies(cfg, repo: Repository, backup: Backup, log: RunLog) -> List[Dict[str, Any]]:
    """Upload ``backup`` again to every destination whose copy is stale (another key, or rewritten locally),
    then delete that destination's objects of the backup under the old key. Call under the lock.

    Returns one row per destination tried: ``{"destination", "ok", ...}``; a failure drops the copy record."""
    rows: List[Dict[str, Any]] = []
    for name in sorted({c.destination for c in backup.manifest.copies}):
        if copy_state(backup, name) != "stale":
            continue
        try:
            settings = find_settings(cfg, name)
            dest = open_destination(settings)
            try:
                record = copy_backup(repo, backup, dest, settings)
                pause("rekey-uploaded")  # crash tests: the new copy is there, the old objects too
                removed = remove_unnamed_objects(dest, backup)
            finally:
                dest.close()
        except BackupError as exc:
            drop_copy(repo, backup, name)
            log.failure("copy-failed", id=backup.id, destination=name, step="rekey", error=str(exc))
            rows.append({"destination": name, "ok": False, "error": str(exc)})
            continue
        current = record_copy(repo, backup, record)
        if current is not None:
            backup.manifest = current.manifest
        log.info("copied", id=backup.id, destination=name, uri=record["uri"], uploaded=record["uploaded"],
                 removed=len(removed), key_id=record["key_id"])
        rows.append({"destination": name, "ok": True, "uploaded": record["uploaded"], "removed": len(removed)})
    return rows


def select_for_rekey(repo: Repository, selectors: Sequence[str], kind: Optional[str], before: Optional[str],
                     everything: bool, tz_name: str) -> List[Backup]:
    if not (selectors or kind or before or everything):
        raise ConfigError("rekey needs a selection of backups", hint="rekey-selection")
    if selectors:
        chosen = [repo.find(s, kind=kind) for s in selectors]
    else:
        chosen = repo.backups(kind=kind)
    if before:
        moment = parse_moment(before, tz_name)
        chosen = [b for b in chosen if b.created_at < moment]
    return chosen


def _rekey_repository(cfg) -> Repository:
    repo = open_repository(cfg)
    repo.trust.accept_unencrypted = True  # encrypting backups that are not (yet) is what rekey is for
    return repo


def plan_rekey(cfg, selectors: Sequence[str] = (), kind: Optional[str] = None, before: Optional[str] = None,
               everything: bool = False) -> List[Dict[str, Any]]:
    """What ``rekey`` would do with the same selection: a row per backup, ``changed`` when it would be
    re-encrypted (its key is not the newest). Reads only: no lock, no key material beyond the keyring's ids."""
    repo = _rekey_repository(cfg)
    sealing = sealing_for(cfg, load_keyring(cfg))
    rows = []
    for backup in select_for_rekey(repo, selectors, kind, before, everything, cfg.timezone):
        old = backup.manifest.encryption
        row = {"id": backup.id, "type": backup.kind, "from": old.key_id if old else None, "to": sealing.key_id}
        reason = rewrite_reason(repo, backup, sealing)
        stale = [c.destination for c in backup.manifest.copies
                 if c.removed_at is None and (reason or copy_state(backup, c.destination) == "stale")]
        if stale:
            row["destinations"] = sorted(set(stale))
        if reason is None:
            rows.append(dict(row, changed=False, details="already under key id %s" % sealing.key_id
                             + ("; would upload again to %s" % ", ".join(row["destinations"]) if stale else "")))
        else:
            rows.append(dict(row, changed=True, details=_describe(reason, len(backup.manifest.files), row["from"],
                                                                  sealing, False)))
    return rows


def rekey(cfg, selectors: Sequence[str] = (), kind: Optional[str] = None, before: Optional[str] = None,
          everything: bool = False) -> List[Dict[str, Any]]:
    """Re-encrypt the chosen backups to the newest key; a failure stops at that backup (the rest untouched)."""
    repo = _rekey_repository(cfg)
    ring = load_keyring(cfg)
    sealing = sealing_for(cfg, ring)
    if sealing.mode == "age":
        missing = [k for k in sealing.key_ids or [] if k not in ring.identities]
        if len(missing) == len(sealing.key_ids or []):
            raise ConfigError("rekey to age recipients verifies each new copy, so it needs an identity of key id %s "
                              "(BACKUP_ENCRYPTION_IDENTITY_FILE)" % " or ".join(missing))
    log = RunLog(repo.log_dir)
    results = []
    failed: List[Dict[str, Any]] = []
    with repo.lock(wait_seconds=600):
        for backup in select_for_rekey(repo, selectors, kind, before, everything, cfg.timezone):
            try:
                row = rekey_backup(repo, backup, ring, sealing)
            except BackupError as exc:
                log.failure("rekey-failed", id=backup.id, step=exc.step, error=str(exc))
                raise
            if row["changed"]:
                log.info("rekey-ok", id=backup.id, key_id=sealing.key_id)
            copies = reach_copies(cfg, repo, backup, log)
            if copies:
                row["destinations"] = copies
                row["details"] += "; copy %s" % ", ".join(
                    "at %s uploaded again" % c["destination"] if c["ok"] else "at %s failed (forgotten: sync "
                    "uploads it again)" % c["destination"] for c in copies)
            failed.extend(c for c in copies if not c["ok"])
            results.append(row)
    if failed:
        # the local backups are re-encrypted; each failed destination's copy is forgotten, so sync uploads again
        raise_failures({"failed": failed}, "the backups are re-encrypted here, but ")
    return results
