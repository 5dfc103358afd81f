# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sealed manifests: at a destination, the fields that describe the data travel encrypted.

Listing, retention and the signature need the id, type, database, times, status, files and encryption
record in clear; table names with row counts, the database's SQL settings, host and user names do not.
``seal_description`` moves those fields into ``"sealed"`` (base64 of their JSON, encrypted like a data
file and bound to the name ``<id>.json#sealed`` of the same backup and repository, so a blob moved to
another manifest fails); ``unseal_description`` puts them back for a host that holds the key.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any, Dict, List, Mapping, Tuple

from ..core.errors import KeyMissing
from .crypto import MAGIC, AesReader, AgeReader, AuthenticationFailed, Binding, read_aes_header
from .keyring import Keyring
from .stored import DEFAULT_REPOSITORY, Sealing

# The manifest's JSON keys that describe the data (model/manifest.Manifest), as opposed to those that
# listing, retention, verification and the signature need.
DESCRIBING = ("table_rows", "database_sql", "source", "host", "server", "client", "globals", "user_objects",
              "database_size", "warnings")
SEALED_KEY = "sealed"
SEALED_NAME_SUFFIX = ".json#sealed"
_AGE_MAGIC = b"age-encryption.org/"
_MAX_SEALED = 16 << 20  # a sealed description is a few KiB; anything near this is not ours


def sealed_binding(document: Mapping[str, Any]) -> Binding:
    """The binding of a manifest's sealed blob: same rule as its files (the manifest's repository, else
    "default"), with the name ``<id>.json#sealed``."""
    backup_id = document.get("id")
    if not isinstance(backup_id, str) or not backup_id:
        raise AuthenticationFailed("the manifest has no id to bind its sealed description to")
    repository = document.get("repository") or DEFAULT_REPOSITORY
    if not isinstance(repository, str):
        raise AuthenticationFailed("manifest %s: repository %r is not a name" % (backup_id, repository))
    return Binding(repository, backup_id, backup_id + SEALED_NAME_SUFFIX)


def seal_description(document: Mapping[str, Any], sealing: Sealing, repository: str) -> Dict[str, Any]:
    """A copy of the manifest ``document`` with the describing fields encrypted into ``"sealed"``.

    ``repository``: this host's repository id; a document naming another repository is refused (it is
    not ours to upload). A document without one (written before repository ids) is bound to "default",
    like its files."""
    named = document.get("repository")
    if named and named != repository:
        raise ValueError("manifest %s belongs to repository %s, not %s" % (document.get("id"), named, repository))
    if document.get(SEALED_KEY):
        return dict(document)  # already sealed: sealing twice would hide the first blob inside the second
    described = {key: document[key] for key in DESCRIBING if key in document}
    sealed = {key: value for key, value in document.items() if key not in DESCRIBING}
    plain = json.dumps(described, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    out = io.BytesIO()
    writer = sealing.writer(out.write, sealed_binding(document))
    try:
        writer.write(plain)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    sealed[SEALED_KEY] = base64.b64encode(out.getvalue()).decode("ascii")
    return sealed


def _age_identities(document: Mapping[str, Any], ring: Keyring, backup_id: str) -> Tuple[List[object], List[str]]:
    record = document.get("encryption")
    key_ids: List[str] = []
    if isinstance(record, Mapping):
        key_ids = [k for k in (record.get("key_ids") or [record.get("key_id")]) if isinstance(k, str)]
    chosen = [ring.identities[k] for k in key_ids if k in ring.identities]
    # The record names the data's recipients; a blob sealed to the recipients of a later sync may differ,
    # and age itself finds the identity that matches, so every identity here is offered after those.
    chosen += [identity for key_id, identity in sorted(ring.identities.items()) if key_id not in key_ids]
    if not chosen:
        raise KeyMissing("backup %s: its sealed description needs an age identity (key id %s; "
                         "BACKUP_ENCRYPTION_IDENTITY_FILE; identities here: none)"
                         % (backup_id, " or ".join(key_ids) or "?"), hint="checksum-level")
    return chosen, key_ids


def unseal_description(document: Mapping[str, Any], ring: Keyring) -> Dict[str, Any]:
    """The manifest ``document`` with its sealed describing fields back in clear (a copy; unchanged when
    nothing is sealed). AuthenticationFailed when the blob is tampered with or belongs to another backup
    or repository; KeyMissing when its key is not in ``ring``."""
    blob_text = document.get(SEALED_KEY)
    if not blob_text:
        return dict(document)
    binding = sealed_binding(document)
    label = "backup %s sealed description" % binding.backup_id
    if not isinstance(blob_text, str) or len(blob_text) > _MAX_SEALED:
        raise AuthenticationFailed("%s is not a base64 text of a sealed description" % label)
    try:
        blob = base64.b64decode(blob_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AuthenticationFailed("%s is not valid base64 (tampered)" % label) from None
    raw = io.BytesIO(blob)
    # The blob says how it is sealed (its own header); the binding and the tags say whether to trust it.
    if blob.startswith(MAGIC):
        key_id, _chunk, _header = read_aes_header(raw)
        raw.seek(0)
        reader: Any = AesReader(raw, ring.aes_key(key_id, binding.backup_id), label, binding)
    elif blob.startswith(_AGE_MAGIC):
        identities, key_ids = _age_identities(document, ring, binding.backup_id)
        reader = AgeReader(raw, identities, label, key_ids or ["?"], binding)
    else:
        raise AuthenticationFailed("%s is neither aes-256-gcm nor age encrypted (tampered)" % label)
    with io.BufferedReader(reader) as plain:
        data = plain.read(_MAX_SEALED + 1)
    try:
        described = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AuthenticationFailed("%s decrypts to no JSON document" % label) from None
    if not isinstance(described, dict) or any(key not in DESCRIBING for key in described):
        raise AuthenticationFailed("%s holds fields that are not describing fields" % label)
    clash = sorted(key for key in described if key in document)
    if clash:
        raise AuthenticationFailed("%s seals %s, which the manifest also has in clear (tampered)"
                                   % (label, ", ".join(clash)))
    opened = {key: value for key, value in document.items() if key != SEALED_KEY}
    opened.update(described)
    return opened


__all__ = ["DESCRIBING", "SEALED_KEY", "seal_description", "sealed_binding", "unseal_description"]
