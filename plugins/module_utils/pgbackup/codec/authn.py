# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifests are authenticated: who may write one, and what a reader accepts (docs/encryption.md, threat model).

Every manifest carries ``"auth": {"algorithm", "key_id", "value"}`` over the canonical JSON of everything else:

* ``hmac-sha256`` under a key derived from the repository's aes-256-gcm key (any holder of the key can sign);
* ``ed25519`` with a signing key on the backup host (age mode: restore hosts pin its public key and cannot sign).

A manifest is trusted only when its bytes are exactly the canonical rendering of its document, the signature
checks under a key this host trusts, and it names this repository (``BACKUP_REPOSITORY_ID``). Then the policy:
with encryption configured for its kind, a backup that is not encrypted, or is encrypted under a key or
recipients this host does not have configured, is refused. ``BACKUP_ACCEPT_UNSIGNED`` and
``BACKUP_ACCEPT_UNENCRYPTED`` lift one rule each, explicitly. With no encryption and no signing key configured
nothing is signed and everything is accepted, as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Set

from ..config.options import ALL_KINDS
from ..core.errors import ConfigError, KeyMissing
from ..model.manifest import Auth, Manifest
from .keyring import Keyring, _read_text, check_secret_file, load_keyring, resolve
from .sealed import seal_description, unseal_description
from .stored import Sealing, sealing_for

HMAC_ALGORITHM = "hmac-sha256"
ED25519_ALGORITHM = "ed25519"
_MESSAGE_LABEL = b"seawall-pgbackup manifest v1\n"
_HMAC_LABEL = b"seawall-pgbackup manifest authentication v1"
PUBLIC_PREFIX = "ed25519:"


def render_manifest(document: Mapping[str, Any]) -> bytes:
    """The bytes of a manifest on disk and at destinations: the only form a signed manifest may have."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True).encode("ascii") + b"\n"


def _message(document: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "auth"}
    return _MESSAGE_LABEL + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _ed25519():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("manifest signatures need the Python package 'cryptography' (pip install cryptography)"
                          ) from None
    return ed25519


def _raw_public(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_text(public_key) -> str:
    """``ed25519:<base64>``: how a public key is configured (BACKUP_ENCRYPTION_TRUSTED_SIGNERS) and printed."""
    return PUBLIC_PREFIX + base64.b64encode(_raw_public(public_key)).decode("ascii")


def signer_key_id(public_key) -> str:
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def mac_key(aes_key: bytes) -> bytes:
    """The manifest key of a repository key: never the encryption key itself."""
    return hmac.new(aes_key, _HMAC_LABEL, hashlib.sha256).digest()


def parse_public(text: str):
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX):], validate=True)
        return _ed25519().Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ConfigError("BACKUP_ENCRYPTION_TRUSTED_SIGNERS: %r is not an Ed25519 public key" % text[:80]) from None


def load_signing_key(path: str, backup_dir: Optional[str]):
    """The Ed25519 private key of a 0600 PEM file outside the backup directory (one line on any problem)."""
    path = resolve(path)
    check_secret_file(path, backup_dir, "signing key file")
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    try:
        key = serialization.load_pem_private_key(_read_text(path, "signing key file").encode("ascii"), None)
    except (ValueError, TypeError, UnicodeEncodeError):
        key = None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise ConfigError("signing key file %s does not hold an Ed25519 private key (PEM)" % path,
                          hint="keygen-signing")
    return key


def write_signing_key(path: str, backup_dir: Optional[str]) -> Dict[str, str]:
    """A new Ed25519 signing key (PEM, 0600, never overwriting); returns its id, public key and path."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    path = os.path.abspath(path)
    if backup_dir:
        root = os.path.realpath(backup_dir)
        if os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep):
            raise ConfigError("signing key file %s is inside the backup directory %s: keep keys apart from the "
                              "backups" % (path, root))
    key = _ed25519().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        raise ConfigError("signing key file %s exists: not overwritten" % path) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    public = key.public_key()
    return {"key_id": signer_key_id(public), "public_key": public_text(public), "path": path,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


class Untrusted(Exception):
    """Why a manifest is not trusted (``missing_key``: a key id this host lacks, for KeyMissing's exit code)."""

    def __init__(self, reason: str, missing_key: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing_key = missing_key


@dataclass
class Trust:
    """What this host signs with and accepts. ``Trust()`` (no keys configured) signs nothing, accepts all."""

    repository: str = "default"
    active: bool = False
    mac_keys: Dict[str, bytes] = field(default_factory=dict)     # aes key id -> manifest key
    signers: Dict[str, Any] = field(default_factory=dict)        # signer key id -> Ed25519 public key
    signing_key: Any = None
    write_mac_id: Optional[str] = None
    encrypted_kinds: Set[str] = field(default_factory=set)
    aes_ids: Set[str] = field(default_factory=set)               # aes keys configured (the keyring)
    age_ids: Set[str] = field(default_factory=set)               # age recipients and identities configured
    accept_unsigned: bool = False
    accept_unencrypted: bool = False
    places: List[str] = field(default_factory=list)
    ring: Optional[Keyring] = None
    sealing: Optional[Sealing] = None  # what seals the describing fields of manifests sent to destinations

    @classmethod
    def from_config(cls, cfg: Any) -> "Trust":
        encrypted = {k for k in ALL_KINDS if cfg.encryption_for(k)}
        signing_file = getattr(cfg, "encryption_signing_key_file", None)
        trusted = list(getattr(cfg, "encryption_trusted_signers", None) or [])
        trust = cls(repository=getattr(cfg, "repository_id", None) or "default",
                    accept_unsigned=bool(getattr(cfg, "accept_unsigned", False)),
                    accept_unencrypted=bool(getattr(cfg, "accept_unencrypted", False)))
        if not (encrypted or signing_file or trusted):
            return trust
        trust.active = True
        trust.encrypted_kinds = encrypted
        ring = load_keyring(cfg)
        trust.ring = ring
        trust.places = list(ring.places)
        trust.mac_keys = {key_id: mac_key(key) for key_id, key in ring.aes_keys.items()}
        trust.write_mac_id = ring.write_aes_id
        trust.aes_ids = set(ring.aes_keys)
        trust.age_ids = set(ring.recipient_ids) | set(ring.identities)
        if encrypted:
            try:
                trust.sealing = sealing_for(cfg, ring)
            except ConfigError:
                trust.sealing = None  # a restore-only host: it reads sealed manifests, never sends any
        for text in trusted:
            public = parse_public(text)
            trust.signers[signer_key_id(public)] = public
        if signing_file:
            trust.signing_key = load_signing_key(signing_file, cfg.backup_dir)
            public = trust.signing_key.public_key()
            trust.signers[signer_key_id(public)] = public
            trust.places.append("signing key %s" % resolve(signing_file))
        return trust

    # ------------------------------------------------------------------ writing

    @property
    def can_sign(self) -> bool:
        return not self.active or self.signing_key is not None or self.write_mac_id is not None

    @property
    def signer_id(self) -> Optional[str]:
        """The key id new signatures are made with (None: this host signs nothing)."""
        if not self.active:
            return None
        if self.signing_key is not None:
            return signer_key_id(self.signing_key.public_key())
        return self.write_mac_id

    def require_signer(self) -> None:
        """Fail before a backup is taken when its manifest could not be signed here."""
        if not self.can_sign:
            raise ConfigError("manifests are signed, and this host has no key to sign with: set "
                              "BACKUP_ENCRYPTION_SIGNING_KEY_FILE (age mode) or an aes-256-gcm key",
                              hint="keygen-signing")

    def sign_document(self, document: Dict[str, Any]) -> Dict[str, Any]:
        """``document`` with this repository's id and a fresh ``auth`` (unchanged when nothing is configured)."""
        document = {k: v for k, v in document.items() if k != "auth"}
        if not self.active:
            return document
        self.require_signer()
        document["repository"] = self.repository
        message = _message(document)
        if self.signing_key is not None:
            auth = {"algorithm": ED25519_ALGORITHM, "key_id": signer_key_id(self.signing_key.public_key()),
                    "value": base64.b64encode(self.signing_key.sign(message)).decode("ascii")}
        else:
            auth = {"algorithm": HMAC_ALGORITHM, "key_id": self.write_mac_id,
                    "value": hmac.new(self.mac_keys[self.write_mac_id], message, hashlib.sha256).hexdigest()}
        document["auth"] = auth
        return document

    def destination_document(self, manifest: Manifest) -> Dict[str, Any]:
        """The manifest as a destination keeps it: no local list of copies, the describing fields sealed with
        the data key (when this host encrypts), signed."""
        document = manifest.to_dict()
        document.pop("copies", None)
        if self.active:
            document["repository"] = self.repository  # the sealed blob is bound to it, like the files
        if self.sealing is not None:
            document = seal_description(document, self.sealing, self.repository)
        return self.sign_document(document)

    def opened_document(self, manifest: Manifest) -> Dict[str, Any]:
        """A destination's manifest with its sealed describing fields back in clear (KeyMissing without the key)."""
        return unseal_description(manifest.to_dict(), self.ring or Keyring())

    def render(self, manifest: Manifest) -> bytes:
        """The signed bytes of ``manifest``; its ``repository`` and ``auth`` are updated to match."""
        document = self.sign_document(manifest.to_dict())
        if self.active:
            manifest.repository = document["repository"]
            manifest.auth = Auth.from_dict(document["auth"], "auth")
        return render_manifest(document)

    # ------------------------------------------------------------------ reading

    def check_document(self, data: bytes, document: Mapping[str, Any]) -> None:
        """Raise Untrusted unless ``document`` (parsed from exactly ``data``) is signed by a key trusted here."""
        if not self.active:
            return
        auth = document.get("auth")
        if auth is None:
            if self.accept_unsigned:
                return
            raise Untrusted("is not signed (written before manifests were signed, or planted): trust it only to "
                            "migrate it, with BACKUP_ACCEPT_UNSIGNED=true for one rekey of all backups")
        if not isinstance(auth, Mapping) or not all(isinstance(auth.get(k), str)
                                                    for k in ("algorithm", "key_id", "value")):
            raise Untrusted("has a malformed signature record")
        if data != render_manifest(document):
            raise Untrusted("is not in its signed form (its bytes were changed after it was signed)")
        algorithm, key_id = auth["algorithm"], auth["key_id"]
        message = _message(document)
        if algorithm == HMAC_ALGORITHM:
            key = self.mac_keys.get(key_id)
            if key is None:
                raise Untrusted("is signed with key id %s, which is not in the keyring (%s)"
                                % (key_id, ", ".join(self.places) or "no key configured"), missing_key=key_id)
            good = hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest(), auth["value"])
        elif algorithm == ED25519_ALGORITHM:
            public = self.signers.get(key_id)
            if public is None:
                raise Untrusted("is signed by signer %s, which is not trusted here "
                                "(BACKUP_ENCRYPTION_TRUSTED_SIGNERS)" % key_id, missing_key=key_id)
            good = _ed25519_verifies(public, auth["value"], message)
        else:
            raise Untrusted("is signed with %r, which this version does not know" % algorithm[:40])
        if not good:
            raise Untrusted("fails its signature check (changed after it was signed, or forged)")
        if document.get("repository") != self.repository:
            raise Untrusted("belongs to repository %r, this is %r (BACKUP_REPOSITORY_ID)"
                            % (str(document.get("repository"))[:64], self.repository))

    def check_policy(self, manifest: Manifest) -> None:
        """Raise Untrusted when the backup is not encrypted as this host's configuration requires."""
        if not self.active or self.accept_unencrypted or manifest.kind not in self.encrypted_kinds:
            return
        for entry in manifest.files:
            record = manifest.encryption_of(entry)
            if record is None:
                raise Untrusted("is not encrypted, but encryption is configured for %s backups (trust it "
                                "explicitly: BACKUP_ACCEPT_UNENCRYPTED=true)" % manifest.kind)
            if record.algorithm == "aes-256-gcm":
                if record.key_id not in self.aes_ids:
                    raise Untrusted("is encrypted under key id %s, which is not in the keyring (%s)"
                                    % (record.key_id, ", ".join(self.places) or "no key configured"),
                                    missing_key=record.key_id)
            elif not set(record.key_ids or [record.key_id]) & self.age_ids:
                raise Untrusted("is encrypted to age key id %s, none of the recipients or identities configured "
                                "here (trust it explicitly: BACKUP_ACCEPT_UNENCRYPTED=true)"
                                % ", ".join(record.key_ids or [str(record.key_id)]))

    @staticmethod
    def key_missing(backup_id: str, problem: Untrusted) -> KeyMissing:
        return KeyMissing("backup %s %s" % (backup_id, problem.reason))


def _ed25519_verifies(public, value: str, message: bytes) -> bool:
    try:
        public.verify(base64.b64decode(value, validate=True), message)
        return True
    except Exception:  # pylint: disable=broad-except  # InvalidSignature, or a value that is not base64
        return False


__all__ = ["Trust", "Untrusted", "render_manifest", "write_signing_key", "public_text"]
