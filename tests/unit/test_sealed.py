"""Sealed manifests (issue 16): at a destination the fields that describe the data are encrypted with the data key,
bound to their backup; round trip in both modes, tampering and a blob moved to another backup are refused."""

from __future__ import annotations

import base64
import copy
import json
import os

import pytest
from seawall_pgbackup.codec.crypto import AES_MODE, AGE_MODE, AuthenticationFailed, aes_key_id, age_key_id
from seawall_pgbackup.codec.keyring import Keyring
from seawall_pgbackup.codec.sealed import DESCRIBING, seal_description, unseal_description
from seawall_pgbackup.codec.stored import Sealing
from seawall_pgbackup.core.errors import KeyMissing
from seawall_pgbackup.model.manifest import Manifest

KEY = os.urandom(32)
ID = "full-app-20261126T020000Z"
OTHER = "full-app-20261127T020000Z"


@pytest.fixture(scope="module")
def age_keys():
    pyrage = pytest.importorskip("pyrage") if not os.environ.get("CI") else __import__("pyrage")
    identity = pyrage.x25519.Identity.generate()
    return identity, identity.to_public()


def _sealing(mode, age_keys) -> Sealing:
    if mode == AES_MODE:
        return Sealing(AES_MODE, key=KEY, key_id=aes_key_id(KEY))
    _identity, recipient = age_keys
    key_id = age_key_id(str(recipient))
    return Sealing(AGE_MODE, recipients=[recipient], key_id=key_id, key_ids=[key_id])


def _ring(age_keys) -> Keyring:
    identity, recipient = age_keys
    return Keyring(aes_keys={aes_key_id(KEY): KEY}, identities={age_key_id(str(recipient)): identity})


def _document(backup_id: str, sealing: Sealing, repository="prod") -> dict:
    document = {
        "format_version": 1, "id": backup_id, "type": "full", "method": "logical", "status": "ok",
        "database": "app", "created_at": "2026-11-26T02:00:00.000000Z", "finished_at": "2026-11-26T02:00:03.000000Z",
        "duration_seconds": 3.0, "host": "db1.internal",
        "tool": {"name": "seawall-pgbackup", "version": "1.0.0"},
        "source": {"url": "postgresql://backup@db1/app", "user": "backup", "superuser": False},
        "server": {"version": "PostgreSQL 15.8", "version_num": 150008, "major": 15, "system_identifier": "7",
                   "encoding": "UTF8", "collate": "C", "ctype": "C"},
        "client": {"version": "15.8", "major": 15, "bin_dir": "/usr/lib/postgresql/15/bin"},
        "files": [{"name": backup_id + ".dump.gz.enc", "role": "database", "size": 10, "sha256": "a" * 64,
                   "compression": "gzip"}],
        "compression": "gzip", "encryption": sealing.record(), "parent": None, "user_objects": 12,
        "database_size": 123456, "table_rows": {"public.players": 1000, "payroll.salaries": 12},
        "database_sql": ["ALTER DATABASE app SET search_path = payroll"], "globals": {"role_passwords": False},
        "warnings": ["pg_dump: warning: something about payroll"], "verification": None,
    }
    if repository:
        document["repository"] = repository
    return document


def test_describing_names_manifest_fields():
    """Every describing key is a JSON key of the manifest model: a rename there cannot leave one in clear."""
    known = {Manifest.KEYS.get(name, name) for name in Manifest.__dataclass_fields__}  # pylint: disable=no-member
    assert set(DESCRIBING) <= known


@pytest.mark.parametrize("mode", [AES_MODE, AGE_MODE])
def test_round_trip_keeps_only_listing_fields_in_clear(mode, age_keys):
    sealing = _sealing(mode, age_keys)
    document = _document(ID, sealing)
    sealed = seal_description(document, sealing, "prod")
    assert not set(DESCRIBING) & set(sealed) and set(sealed) == set(document) - set(DESCRIBING) | {"sealed"}
    text = json.dumps(sealed)
    for secret in ("players", "payroll", "db1.internal", "backup@", "search_path", "123456"):
        assert secret not in text, secret
    Manifest.from_dict(copy.deepcopy(sealed))  # a valid manifest as it is: listing and retention read it
    assert unseal_description(sealed, _ring(age_keys)) == document
    assert document["table_rows"] == {"public.players": 1000, "payroll.salaries": 12}  # the input is not changed
    assert unseal_description(document, _ring(age_keys)) == document  # nothing sealed: unchanged


@pytest.mark.parametrize("mode", [AES_MODE, AGE_MODE])
def test_a_tampered_blob_is_refused(mode, age_keys):
    sealing = _sealing(mode, age_keys)
    sealed = seal_description(_document(ID, sealing), sealing, "prod")
    blob = bytearray(base64.b64decode(sealed["sealed"]))
    for offset in (len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[offset] ^= 0x20
        with pytest.raises(AuthenticationFailed) as caught:
            unseal_description(dict(sealed, sealed=base64.b64encode(bytes(bad)).decode()), _ring(age_keys))
        assert "\n" not in str(caught.value)
    with pytest.raises(AuthenticationFailed, match="not valid base64"):
        unseal_description(dict(sealed, sealed="!!" + sealed["sealed"]), _ring(age_keys))
    with pytest.raises(AuthenticationFailed, match="neither aes-256-gcm nor age"):
        unseal_description(dict(sealed, sealed=base64.b64encode(b"plain text").decode()), _ring(age_keys))


@pytest.mark.parametrize("mode", [AES_MODE, AGE_MODE])
@pytest.mark.parametrize("move", ["another backup id", "another repository"])
def test_a_blob_from_another_backup_is_refused(mode, move, age_keys):
    sealing = _sealing(mode, age_keys)
    theirs = seal_description(_document(OTHER, sealing), sealing, "prod")
    mine = seal_description(_document(ID, sealing), sealing, "prod")
    if move == "another backup id":
        forged = dict(mine, sealed=theirs["sealed"])
    else:
        forged = dict(mine, repository="staging")
    with pytest.raises(AuthenticationFailed, match="moved or replayed"):
        unseal_description(forged, _ring(age_keys))


def test_a_field_in_clear_and_sealed_is_refused(age_keys):
    sealing = _sealing(AES_MODE, age_keys)
    sealed = seal_description(_document(ID, sealing), sealing, "prod")
    with pytest.raises(AuthenticationFailed, match="seals host, which the manifest also has in clear"):
        unseal_description(dict(sealed, host="evil"), _ring(age_keys))


def test_missing_keys_are_one_line(age_keys):
    for mode in (AES_MODE, AGE_MODE):
        sealing = _sealing(mode, age_keys)
        sealed = seal_description(_document(ID, sealing), sealing, "prod")
        with pytest.raises(KeyMissing) as caught:
            unseal_description(sealed, Keyring())
        assert ID in str(caught.value) and "\n" not in str(caught.value)


def test_repository_rules(age_keys):
    sealing = _sealing(AES_MODE, age_keys)
    with pytest.raises(ValueError, match="belongs to repository staging, not prod"):
        seal_description(_document(ID, sealing, "staging"), sealing, "prod")
    legacy = _document(ID, sealing, repository=None)  # before repository ids: bound to "default", like its files
    sealed = seal_description(legacy, sealing, "prod")
    assert "repository" not in sealed and unseal_description(sealed, _ring(age_keys)) == legacy
    assert seal_description(sealed, sealing, "prod") == sealed  # sealing twice changes nothing
