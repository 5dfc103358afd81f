# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stored bytes of a backup file: written (compressed -> encrypted -> sha256) and read back.

``StoredWriter`` sits between the compressor and the ``.partial`` file: it encrypts when asked and
hashes what is really stored, so the manifest's sha256 and size are of the file on disk.
``open_stored`` is the one way every reader (verify, restore, drill, rekey) gets the original
bytes of a stored file: decrypt (when the manifest says so), then decompress.

Files written now are bound (codec/crypto.Binding) to their repository, backup id and name; a manifest
whose ``encryption.format`` is a bound one is read only with that binding, an older one only without.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Union

from ..core.errors import BackupError, ConfigError, VerifyError, file_error
from ..core.fsutil import describe_os_error
from ..model.manifest import Encryption, FileEntry
from .compression import decompressing_reader
from .crypto import (AES_FORMAT, AES_MODE, AGE_FORMAT, AGE_MODE, KNOWN_FORMATS, SUFFIX, AesReader, AesWriter,
                     AgeReader, AgeWriter, AuthenticationFailed, Binding, is_bound, read_aes_header)
from .keyring import Keyring, load_keyring

DEFAULT_REPOSITORY = "default"  # the binding's repository for manifests written before repository ids


@dataclass
class Sealing:
    """How new files are encrypted: the mode, its key or recipients, and the manifest's record."""

    mode: str
    key: Optional[bytes] = None
    key_id: str = ""
    recipients: Optional[List[object]] = None
    key_ids: Optional[List[str]] = None

    @property
    def suffix(self) -> str:
        return SUFFIX[self.mode]

    def record(self) -> Dict[str, Any]:
        """What the manifest keeps: algorithm and key id(s), never key material."""
        if self.mode == AES_MODE:
            return {"algorithm": AES_MODE, "format": AES_FORMAT, "key_id": self.key_id}
        return {"algorithm": "age-x25519", "format": AGE_FORMAT, "key_id": self.key_id,
                "key_ids": list(self.key_ids or [])}

    def writer(self, sink, binding: Binding):
        """An encrypting writer into ``sink``; the record says the file is bound, so a binding is required."""
        if not isinstance(binding, Binding):
            raise ValueError("an encrypted file is written with its binding (repository, backup id, name)")
        if self.mode == AES_MODE:
            return AesWriter(sink, self.key or b"", binding=binding)
        return AgeWriter(sink, self.recipients or [], binding=binding)


def sealing_for(cfg, ring: Optional[Keyring] = None, recipients: Optional[List[str]] = None) -> Sealing:
    """The sealing new files get under ``cfg`` (the newest key, or the configured age recipients)."""
    ring = ring or load_keyring(cfg)
    if cfg.encryption_mode == AGE_MODE:
        if not ring.recipients:
            raise ConfigError("encryption mode age needs recipients: set BACKUP_ENCRYPTION_RECIPIENTS to age1... "
                              "public keys or a file of them")
        return Sealing(AGE_MODE, recipients=list(ring.recipients), key_id=ring.recipient_ids[0],
                       key_ids=list(ring.recipient_ids))
    if not ring.write_aes_id:
        raise ConfigError("BACKUP_ENCRYPTION=true needs a key: set BACKUP_ENCRYPTION_KEY_FILE or "
                          "BACKUP_ENCRYPTION_KEYRING", hint="keygen")
    return Sealing(AES_MODE, key=ring.aes_keys[ring.write_aes_id], key_id=ring.write_aes_id)


class StoredWriter:
    """Encrypt (optionally), count and hash the bytes that reach ``out``."""

    def __init__(self, out: BinaryIO, path: str, step: str, sealing: Optional[Sealing] = None,
                 binding: Optional[Binding] = None) -> None:
        self._out = out
        self._path = path
        self._step = step
        self._digest = hashlib.sha256()
        self.size = 0
        self._seal = sealing.writer(self._store, binding) if sealing else None  # type: ignore[arg-type]

    def _store(self, data: bytes) -> None:
        if not data:
            return
        self._digest.update(data)
        self.size += len(data)
        try:
            self._out.write(data)
        except OSError as exc:
            raise file_error("cannot write " + describe_os_error(exc, self._path), exc, self._step) from None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._seal is None:
            self._store(data)
            return
        try:
            self._seal.write(data)
        except BackupError:
            raise
        except (OSError, ValueError) as exc:
            raise BackupError("encryption of %s failed: %s" % (self._path, exc), step=self._step) from None

    def close(self) -> None:
        if self._seal is not None:
            try:
                self._seal.close()
            except BackupError:
                raise
            except (OSError, ValueError) as exc:
                raise BackupError("encryption of %s failed: %s" % (self._path, exc), step=self._step) from None

    def abort(self) -> None:
        if self._seal is not None:
            self._seal.abort()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def _label(backup, entry: FileEntry) -> str:
    return "%s file %s" % (backup.id, entry.name)


def binding_of(backup, entry: Union[FileEntry, str]) -> Binding:
    """The binding of one file of ``backup``: its manifest's repository id, its id and the file's name."""
    name = entry if isinstance(entry, str) else entry.name
    return Binding(backup.manifest.repository or DEFAULT_REPOSITORY, backup.id, name)


def decrypting_reader(raw: BinaryIO, encryption: Union[Encryption, Mapping[str, Any], None], ring: Keyring,
                      label: str, backup_id: str = "", binding: Optional[Binding] = None) -> BinaryIO:
    """``raw`` (a binary file at its start) with its encryption removed; ``raw`` is closed with the result.

    The binding is used iff the record's format is a bound one; a bound record without a binding is refused."""
    if isinstance(encryption, Mapping):
        encryption = Encryption.from_dict(dict(encryption)) if encryption else None
    if not encryption:
        return raw
    algorithm = encryption.algorithm
    if algorithm not in KNOWN_FORMATS:
        raise ConfigError("%s: encryption %r is not known to this version" % (label, algorithm))
    if encryption.format not in KNOWN_FORMATS[algorithm]:
        raise ConfigError("%s: encryption format %r is not known to this version" % (label, encryption.format))
    if is_bound(encryption):
        if binding is None:
            raise ValueError("%s: a bound file is read with its binding (repository, backup id, name)" % label)
    else:
        binding = None
    if algorithm == AES_MODE:
        key_id, _chunk, _header = read_aes_header(raw)
        if key_id != encryption.key_id:
            raise AuthenticationFailed("%s: the file's header names key id %s, the manifest %s (replaced or "
                                       "tampered)" % (label, key_id, encryption.key_id))
        key = ring.aes_key(key_id, backup_id)
        raw.seek(0)
        return io.BufferedReader(AesReader(raw, key, label, binding), 1 << 20)
    key_ids = list(encryption.key_ids or [encryption.key_id])
    identities = ring.age_identities_for(key_ids, backup_id)
    return io.BufferedReader(AgeReader(raw, identities, label, key_ids, binding), 1 << 20)


def open_decrypted(path: str, encryption: Union[Encryption, Mapping[str, Any], None], ring_source, label: str,
                   backup_id: str = "", binding: Optional[Binding] = None) -> BinaryIO:
    """The stored file at ``path`` with its encryption removed (still compressed). ``ring_source``: a
    Keyring, or a Config to load one from when (and only when) the file is encrypted. ``binding``: where
    the file belongs, checked when the record's format is a bound one (see ``decrypting_reader``)."""
    raw = open(path, "rb")  # pylint: disable=consider-using-with
    if not encryption:
        return raw
    try:
        ring = ring_source if isinstance(ring_source, Keyring) else load_keyring(ring_source)
        return decrypting_reader(raw, encryption, ring, label, backup_id, binding)
    except BaseException:
        raw.close()
        raise


def open_stored(backup, entry: FileEntry, cfg, ring: Optional[Keyring] = None) -> BinaryIO:
    """A readable binary stream of the original bytes of one stored file of ``backup``: decrypted, decompressed.

    A missing key raises KeyMissing (a ConfigError: the backup is not at fault) naming the key id needed;
    bytes that fail authentication, or belong to another backup, file or repository, raise
    AuthenticationFailed (a ValueError) on opening or while reading.
    """
    encryption = backup.manifest.encryption_of(entry)
    stream = open_decrypted(backup.file_path(entry), encryption, ring or cfg, _label(backup, entry), backup.id,
                            binding_of(backup, entry))
    return decompressing_reader(stream, entry.compression or "none")


def require_keys(backup, cfg, ring: Optional[Keyring] = None) -> None:
    """Fail before anything is touched when a key ``backup`` needs is not here (KeyMissing names its id), or
    when a file's header shows it belongs elsewhere."""
    for entry in backup.manifest.files:
        encryption = backup.manifest.encryption_of(entry)
        if encryption:
            ring = ring or load_keyring(cfg)
            try:
                open_decrypted(backup.file_path(entry), encryption, ring, _label(backup, entry), backup.id,
                               binding_of(backup, entry)).close()
            except AuthenticationFailed as exc:
                raise VerifyError(str(exc)) from None
            except OSError as exc:
                raise VerifyError("%s cannot be read: %s" % (_label(backup, entry), exc.strerror or exc)) from None
