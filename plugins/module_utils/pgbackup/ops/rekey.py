# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``rekey``: re-encrypt chosen backups to the newest key (or the configured age recipients).

Per backup, under the repository lock: checksums first; each file is decrypted with its old key and
encrypted with the new one into a new ``.partial`` file (the compressed bytes are not touched); the
copy is verified (sha256 of what is on disk, authentication with the new key, the same compressed
bytes as before, decompressed to the end); only then is it renamed, the manifest rewritten
atomically, and the old files removed. Interrupted anywhere, the manifest names complete files
under one key: the old ones until the manifest is rewritten, the new ones after. Copies no manifest
names are leftovers that the next run removes.
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
from ..model.manifest import Backup, Encryption, FileEntry, Rekeying
from ..pg.pipeline import CHUNK
from ..repo.catalog import Repository, open_repository

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


def same_key(record: Optional[Encryption], sealing: Sealing) -> bool:
    if not record:
        return False
    new = sealing.record()
    if is_bound(record) != is_bound(new):
        return False  # an old, unbound format is rewritten even under the same key (list says "rekey")
    return record.algorithm == new["algorithm"] and (
        sorted(record.key_ids or [record.key_id]) == sorted(new.get("key_ids") or [new["key_id"]]))


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
    if same_key(old, sealing):
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
        manifest = replace(backup.manifest, files=new_entries, rekeyed=history,
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
    return dict(row, changed=True, details="re-encrypted %d file(s) from key id %s to %s"
                % (len(new_entries), row["from"] or "none (unencrypted)", sealing.key_id))


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


def plan_rekey(cfg, selectors: Sequence[str] = (), kind: Optional[str] = None, before: Optional[str] = None,
               everything: bool = False) -> List[Dict[str, Any]]:
    """What ``rekey`` would do with the same selection: a row per backup, ``changed`` when it would be
    re-encrypted (its key is not the newest). Reads only: no lock, no key material beyond the keyring's ids."""
    repo = open_repository(cfg)
    repo.trust.accept_unencrypted = True  # encrypting backups that are not (yet) is what rekey is for
    sealing = sealing_for(cfg, load_keyring(cfg))
    rows = []
    for backup in select_for_rekey(repo, selectors, kind, before, everything, cfg.timezone):
        old = backup.manifest.encryption
        row = {"id": backup.id, "type": backup.kind, "from": old.key_id if old else None, "to": sealing.key_id}
        if same_key(old, sealing):
            rows.append(dict(row, changed=False, details="already under key id %s" % sealing.key_id))
        else:
            rows.append(dict(row, changed=True, details="would re-encrypt %d file(s) from key id %s to %s"
                             % (len(backup.manifest.files), row["from"] or "none (unencrypted)", sealing.key_id)))
    return rows


def rekey(cfg, selectors: Sequence[str] = (), kind: Optional[str] = None, before: Optional[str] = None,
          everything: bool = False) -> List[Dict[str, Any]]:
    """Re-encrypt the chosen backups to the newest key; a failure stops at that backup (the rest untouched)."""
    repo = open_repository(cfg)
    repo.trust.accept_unencrypted = True  # encrypting backups that are not (yet) is what rekey is for
    ring = load_keyring(cfg)
    sealing = sealing_for(cfg, ring)
    if sealing.mode == "age":
        missing = [k for k in sealing.key_ids or [] if k not in ring.identities]
        if len(missing) == len(sealing.key_ids or []):
            raise ConfigError("rekey to age recipients verifies each new copy, so it needs an identity of key id %s "
                              "(BACKUP_ENCRYPTION_IDENTITY_FILE)" % " or ".join(missing))
    log = RunLog(repo.log_dir)
    results = []
    with repo.lock(wait_seconds=600):
        for backup in select_for_rekey(repo, selectors, kind, before, everything, cfg.timezone):
            try:
                row = rekey_backup(repo, backup, ring, sealing)
            except BackupError as exc:
                log.failure("rekey-failed", id=backup.id, step=exc.step, error=str(exc))
                raise
            if row["changed"]:
                log.info("rekey-ok", id=backup.id, key_id=sealing.key_id)
            results.append(row)
    return results
