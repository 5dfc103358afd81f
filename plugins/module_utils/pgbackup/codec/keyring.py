# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption keys: where they live, their ids, which one writes and which one reads.

* Symmetric keys (aes-256-gcm): one 32-byte key per file, 64 hex digits (``openssl rand -hex 32``) or
  base64, ``#`` comments allowed. ``BACKUP_ENCRYPTION_KEY_FILE`` is one key; ``BACKUP_ENCRYPTION_KEYRING``
  a directory of ``*.key`` files. New backups use the key file, else the keyring's newest key (the
  name that sorts last: ``keygen`` names files by creation time); reads find any key by its id.
* age: recipients (public, ``age1...``) write; identities (``AGE-SECRET-KEY-1...``, restore side) read.
* systemd credentials: a relative file or directory name is looked up in ``$CREDENTIALS_DIRECTORY``
  first, and every ``*.key`` credential there joins the keyring.

Secret files must be private (no group or other permission bits) and must not live inside the backup
directory; both are refused with one line. Key material is never logged or put in a manifest.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional

from ..core.errors import ConfigError, KeyMissing
from .crypto import (AES_MODE, AGE_MODE, KEY_BYTES, aes_key_id, age_key_id, generate_aes_key, parse_age_identities,
                     parse_age_recipient)

KEY_SUFFIX = ".key"


def _credentials_dir() -> Optional[str]:
    return os.environ.get("CREDENTIALS_DIRECTORY") or None


def resolve(path: str) -> str:
    """A relative name found in ``$CREDENTIALS_DIRECTORY`` is that credential; otherwise the path as given."""
    creds = _credentials_dir()
    if creds and not os.path.isabs(path):
        candidate = os.path.join(creds, path)
        if os.path.exists(candidate):
            return candidate
    return os.path.abspath(path)


def check_secret_file(path: str, backup_dir: Optional[str], what: str = "key file") -> None:
    """Refuse a secret file others can read, or one stored beside the backups it protects."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise KeyMissing("%s %s cannot be read: %s" % (what, path, exc.strerror)) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError("%s %s is not a regular file" % (what, path))
    if os.name != "nt" and info.st_mode & 0o077:
        raise ConfigError("%s %s has mode %04o: it must be private to its owner (chmod 600 %s)"
                          % (what, path, stat.S_IMODE(info.st_mode), path))
    if backup_dir:
        root = os.path.realpath(backup_dir)
        real = os.path.realpath(path)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            raise ConfigError("%s %s is inside the backup directory %s: keep keys apart from the backups they "
                              "protect" % (what, path, root))


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyMissing("%s %s cannot be read: %s" % (what, path, getattr(exc, "strerror", None) or exc)) from None


def parse_aes_key(text: str, where: str) -> bytes:
    """32 bytes from 64 hex digits or base64; never echoes the value."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) != 1:
        raise ConfigError("key file %s must hold exactly one key line (64 hex digits or base64 of 32 bytes), "
                          "found %d" % (where, len(lines)))
    value = lines[0]
    key = None
    if len(value) == 2 * KEY_BYTES:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != KEY_BYTES:
        raise ConfigError("key file %s does not hold a 32-byte key (64 hex digits or base64)" % where)
    return key


@dataclass
class Keyring:
    """The keys this host has: symmetric keys by id, age recipients (write) and identities by id (read)."""

    aes_keys: Dict[str, bytes] = field(default_factory=dict)
    aes_sources: Dict[str, str] = field(default_factory=dict)   # key id -> file (for messages)
    write_aes_id: Optional[str] = None
    recipients: List[object] = field(default_factory=list)
    recipient_ids: List[str] = field(default_factory=list)
    identities: Dict[str, object] = field(default_factory=dict)
    places: List[str] = field(default_factory=list)             # where keys were looked for (for messages)

    def add_aes(self, path: str, backup_dir: Optional[str]) -> str:
        check_secret_file(path, backup_dir)
        key = parse_aes_key(_read_text(path, "key file"), path)
        key_id = aes_key_id(key)
        self.aes_keys[key_id] = key
        self.aes_sources[key_id] = path
        return key_id

    def aes_key(self, key_id: str, backup_id: str = "") -> bytes:
        key = self.aes_keys.get(key_id)
        if key is None:
            have = ", ".join(sorted(self.aes_keys)) or "none"
            raise KeyMissing("%sneeds aes-256-gcm key id %s, which is not in the keyring (%s; key ids here: %s): "
                             "add that key file to BACKUP_ENCRYPTION_KEYRING"
                             % ("backup %s " % backup_id if backup_id else "", key_id,
                                ", ".join(self.places) or "no key configured", have))
        return key

    def age_identities_for(self, key_ids: List[str], backup_id: str = "") -> list:
        chosen = [self.identities[k] for k in key_ids if k in self.identities]
        if not chosen:
            raise KeyMissing("%sneeds the age identity of key id %s (BACKUP_ENCRYPTION_IDENTITY_FILE; identities "
                             "here: %s); a host with only the public key can verify checksums"
                             % ("backup %s " % backup_id if backup_id else "", " or ".join(key_ids) or "?",
                                ", ".join(sorted(self.identities)) or "none"), hint="checksum-level")
        return chosen


def load_keyring(cfg) -> Keyring:
    """Every key the configuration names; unreadable or unsafe files fail with one line."""
    ring = Keyring()
    backup_dir = cfg.backup_dir
    creds = _credentials_dir()
    if cfg.encryption_keyring:
        directory = resolve(cfg.encryption_keyring)
        ring.places.append("keyring %s" % directory)
        if not os.path.isdir(directory):
            raise KeyMissing("BACKUP_ENCRYPTION_KEYRING=%s is not a directory" % directory)
        newest = None
        for name in sorted(os.listdir(directory)):
            if name.endswith(KEY_SUFFIX) and not name.startswith("."):
                newest = ring.add_aes(os.path.join(directory, name), backup_dir)
        ring.write_aes_id = newest
    if creds and os.path.isdir(creds):
        ring.places.append("credentials %s" % creds)
        for name in sorted(os.listdir(creds)):
            if name.endswith(KEY_SUFFIX):
                key_id = ring.add_aes(os.path.join(creds, name), None)
                ring.write_aes_id = ring.write_aes_id or key_id
    if cfg.encryption_key_file:
        path = resolve(cfg.encryption_key_file)
        ring.places.append("key file %s" % path)
        ring.write_aes_id = ring.add_aes(path, backup_dir)
    for text in cfg.encryption_recipients:
        ring.recipients.append(parse_age_recipient(text))
        ring.recipient_ids.append(age_key_id(text))
    if cfg.encryption_identity_file:
        path = resolve(cfg.encryption_identity_file)
        ring.places.append("identity file %s" % path)
        check_secret_file(path, backup_dir, "identity file")
        for identity in parse_age_identities(_read_text(path, "identity file"), path):
            ring.identities[age_key_id(str(identity.to_public()))] = identity
    return ring


def write_key_file(directory: str, backup_dir: Optional[str]) -> Dict[str, str]:
    """A new aes-256-gcm key as ``<UTC time>-<key id>.key`` (0600) in ``directory``; returns id and path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = generate_aes_key()
    key_id = aes_key_id(key)
    now = datetime.now(timezone.utc)
    path = os.path.join(directory, "%s-%s%s" % (now.strftime("%Y%m%dT%H%M%S.%fZ"), key_id, KEY_SUFFIX))
    if backup_dir:
        root = os.path.realpath(backup_dir)
        if os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep):
            raise ConfigError("keyring %s is inside the backup directory %s: keep keys apart from the backups"
                              % (directory, root))
    text = "# seawall-pgbackup %s key\n# key id: %s\n# created: %s\n%s\n" % (
        AES_MODE, key_id, now.strftime("%Y-%m-%dT%H:%M:%SZ"), key.hex())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return {"key_id": key_id, "path": path, "mode": AES_MODE}


__all__ = ["AGE_MODE", "Keyring", "KeyMissing", "load_keyring", "write_key_file", "check_secret_file"]
