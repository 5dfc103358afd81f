"""Manifests are authenticated (codec/authn.py) and the catalog trusts only what this host's keys and policy accept."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.codec.authn import Trust, render_manifest, write_signing_key
from seawall_pgbackup.codec.keyring import write_key_file
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.core.errors import ConfigError, KeyMissing, VerifyError
from seawall_pgbackup.model.manifest import FORMAT_VERSION
from seawall_pgbackup.repo.catalog import open_repository

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
AES = {"algorithm": "aes-256-gcm", "format": "seawall-aes-256-gcm-chunked-v2"}


def _document(backup_id: str, kind: str = "full", encryption=None) -> dict:
    return {"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": "ok", "database": "app",
            "created_at": iso(T0), "finished_at": iso(T0), "encryption": encryption,
            "files": [{"name": backup_id + ".dump.gz.enc", "role": "database", "size": 4, "sha256": "x" * 64}]}


def _write(backup_dir, document: dict, data: bytes) -> str:
    folder = os.path.join(backup_dir, document["type"])
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(os.path.join(folder, document["files"][0]["name"]), "wb") as handle:
        handle.write(b"data")
    path = os.path.join(folder, document["id"] + ".json")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.fixture(name="aes")
def _aes(tmp_path):
    """A backup directory with an aes keyring: (env, key id)."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    made = write_key_file(str(tmp_path / "keys"), str(backup_dir))
    env = {"BACKUP_DIR": str(backup_dir), "BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_KEYRING": str(tmp_path / "keys")}
    return env, made["key_id"]


def _signed(env: dict, document: dict) -> bytes:
    return render_manifest(Trust.from_config(load_config(env=env)).sign_document(document))


def _ids(env: dict) -> list:
    return [b.id for b in open_repository(load_config(env=env)).backups()]


def _why(env: dict) -> dict:
    return {os.path.basename(where): why for where, why in open_repository(load_config(env=env)).invalid_manifests()}


def test_a_signed_manifest_is_trusted_and_any_change_is_not(aes):
    env, key_id = aes
    doc = _document("full-app-20261120T020000Z", encryption=dict(AES, key_id=key_id))
    data = _signed(env, doc)
    path = _write(env["BACKUP_DIR"], doc, data)
    assert _ids(env) == [doc["id"]]
    signed = json.loads(data)
    assert signed["auth"]["algorithm"] == "hmac-sha256" and signed["auth"]["key_id"] == key_id
    assert signed["repository"] == "default"
    # the same document with other whitespace: not the signed form
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(signed, handle)
    assert _ids(env) == [] and "not in its signed form" in _why(env)[doc["id"] + ".json"]
    # a changed value, rendered canonically: the signature fails
    signed["database"] = "other"
    with open(path, "wb") as handle:
        handle.write(render_manifest(signed))
    assert _ids(env) == [] and "fails its signature check" in _why(env)[doc["id"] + ".json"]


def test_an_unknown_key_another_repository_and_unsigned(aes, tmp_path):
    env, key_id = aes
    doc = _document("full-app-20261120T020000Z", encryption=dict(AES, key_id=key_id))
    _write(env["BACKUP_DIR"], doc, _signed(env, doc))
    other_keys = dict(env, BACKUP_ENCRYPTION_KEYRING=str(tmp_path / "other-keys"))
    write_key_file(str(tmp_path / "other-keys"), env["BACKUP_DIR"])
    assert _ids(other_keys) == []
    with pytest.raises(KeyMissing, match="signed with key id %s, which is not in the keyring" % key_id):
        open_repository(load_config(env=other_keys)).find(doc["id"])
    # another repository's manifest (same key: a second host sharing it) is not this repository's backup
    assert _ids(dict(env, BACKUP_REPOSITORY_ID="eu-2")) == []
    assert "belongs to repository 'default', this is 'eu-2'" in _why(dict(env, BACKUP_REPOSITORY_ID="eu-2"))[
        doc["id"] + ".json"]
    # unsigned (an older version's, or planted): refused, unless explicitly accepted to migrate it
    unsigned = _document("full-app-20261121T020000Z", encryption=dict(AES, key_id=key_id))
    _write(env["BACKUP_DIR"], unsigned, render_manifest(unsigned))
    assert _ids(env) == [doc["id"]]
    with pytest.raises(VerifyError, match="is not trusted: its manifest is not signed"):
        open_repository(load_config(env=env)).find(unsigned["id"])
    assert _ids(dict(env, BACKUP_ACCEPT_UNSIGNED="true")) == [doc["id"], unsigned["id"]]


def test_policy_refuses_unencrypted_and_foreign_keys_unless_accepted(aes):
    env, key_id = aes
    plain = _document("full-app-20261120T020000Z")
    foreign = _document("full-app-20261121T020000Z", encryption=dict(AES, key_id="0123456789abcdef"))
    globals_doc = _document("globals-app-20261122T020000Z", kind="globals")
    for doc in (plain, foreign, globals_doc):
        _write(env["BACKUP_DIR"], doc, _signed(env, doc))
    why = _why(env)
    assert "is not encrypted, but encryption is configured for full backups" in why[plain["id"] + ".json"]
    assert "encrypted under key id 0123456789abcdef, which is not in the keyring" in why[foreign["id"] + ".json"]
    # a kind whose encryption is switched off is not required to be encrypted
    no_globals = dict(env, BACKUP_CONFIG=_config(env, {"types": {"globals": {"encryption": False}}}))
    assert globals_doc["id"] in _ids(no_globals) and plain["id"] not in _ids(no_globals)
    assert set(_ids(dict(env, BACKUP_ACCEPT_UNENCRYPTED="true"))) == {plain["id"], foreign["id"], globals_doc["id"]}


def _config(env: dict, backup: dict) -> str:
    path = os.path.join(os.path.dirname(env["BACKUP_DIR"]), "config-%d.json" % len(os.listdir(
        os.path.dirname(env["BACKUP_DIR"]))))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"backup": backup}, handle)
    return path


def test_ed25519_backup_host_signs_restore_host_only_checks(tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    pyrage = pytest.importorskip("pyrage")
    identity = pyrage.x25519.Identity.generate()
    made = write_signing_key(str(tmp_path / "secure" / "signing.pem"), str(backup_dir))
    assert oct(os.stat(made["path"]).st_mode & 0o777) == "0o600" and made["public_key"].startswith("ed25519:")
    with pytest.raises(ConfigError, match="exists: not overwritten"):
        write_signing_key(made["path"], str(backup_dir))
    backup_env = {"BACKUP_DIR": str(backup_dir), "BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_MODE": "age",
                  "BACKUP_ENCRYPTION_RECIPIENTS": str(identity.to_public()),
                  "BACKUP_ENCRYPTION_SIGNING_KEY_FILE": made["path"]}
    from seawall_pgbackup.codec.crypto import age_key_id
    age = {"algorithm": "age-x25519", "format": "age-encryption.org/v1+seawall-binding-v1",
           "key_id": age_key_id(str(identity.to_public())), "key_ids": [age_key_id(str(identity.to_public()))]}
    doc = _document("full-app-20261120T020000Z", encryption=age)
    _write(str(backup_dir), doc, _signed(backup_env, doc))
    assert json.loads(open(os.path.join(backup_dir, "full", doc["id"] + ".json")).read())["auth"]["algorithm"] \
        == "ed25519"
    assert _ids(backup_env) == [doc["id"]]
    restore_env = {k: v for k, v in backup_env.items() if k != "BACKUP_ENCRYPTION_SIGNING_KEY_FILE"}
    # without the pinned public key a restore host trusts nothing
    assert _ids(restore_env) == [] and "not trusted here" in _why(restore_env)[doc["id"] + ".json"]
    restore_env["BACKUP_ENCRYPTION_TRUSTED_SIGNERS"] = made["public_key"]
    assert _ids(restore_env) == [doc["id"]]
    trust = Trust.from_config(load_config(env=restore_env))
    assert not trust.can_sign
    with pytest.raises(ConfigError, match="no key to sign with"):
        trust.sign_document(doc)
    # another signer's key pinned instead: refused
    other = write_signing_key(str(tmp_path / "secure" / "other.pem"), str(backup_dir))
    assert _ids(dict(restore_env, BACKUP_ENCRYPTION_TRUSTED_SIGNERS=other["public_key"])) == []


def test_nothing_configured_signs_nothing_and_accepts_all(tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    env = {"BACKUP_DIR": str(backup_dir)}
    doc = _document("full-app-20261120T020000Z")
    assert Trust.from_config(load_config(env=env)).sign_document(doc) == doc
    _write(str(backup_dir), doc, render_manifest(doc))
    later = _document("full-app-20261121T020000Z")
    later["created_at"] = iso(T0 + timedelta(days=1))
    _write(str(backup_dir), later, json.dumps(later).encode())  # any JSON form, as before
    assert _ids(env) == [doc["id"], later["id"]]


def test_a_destination_manifest_keeps_only_what_listing_needs_in_clear(aes):
    env, key_id = aes
    doc = dict(_document("full-app-20261120T020000Z", encryption=dict(AES, key_id=key_id)),
               table_rows={"public.players": 1200}, database_sql=["ALTER DATABASE app SET work_mem = '64MB'"],
               host="db-eu-1", source={"url": "postgresql://backup@db-eu-1/app", "user": "backup"},
               copies=[{"destination": "s3"}])
    from seawall_pgbackup.model.manifest import Manifest
    trust = Trust.from_config(load_config(env=env))
    stored = render_manifest(trust.destination_document(Manifest.from_dict(doc, "m.json")))
    for secret in (b"players", b"table_rows", b"work_mem", b"db-eu-1", b"backup@", b"copies"):
        assert secret not in stored
    remote = json.loads(stored)
    assert remote["sealed"] and remote["auth"]["key_id"] == key_id and remote["files"] == doc["files"]
    trust.check_document(stored, remote)
    opened = trust.opened_document(Manifest.from_dict(remote, "m.json"))
    assert opened["table_rows"] == {"public.players": 1200} and opened["host"] == "db-eu-1"
    assert "sealed" not in opened


def test_health_warns_while_an_accept_setting_is_left_on(aes):
    from seawall_pgbackup.ops.health import health
    env, _key_id = aes
    names = {c["check"]: c for c in health(load_config(env=env), connect=False)["checks"]}
    assert "trust" not in names
    relaxed = health(load_config(env=dict(env, BACKUP_ACCEPT_UNSIGNED="true")), connect=False)
    trust = [c for c in relaxed["checks"] if c["check"] == "trust"]
    assert trust and trust[0]["status"] == "warning" and "BACKUP_ACCEPT_UNSIGNED is on" in trust[0]["reason"]
    missing = health(load_config(env=dict(env, BACKUP_ENCRYPTION_KEYRING=env["BACKUP_DIR"] + "-gone")), connect=False)
    assert missing["status"] == "critical" and [c["check"] for c in missing["checks"]] == ["trust"]


def test_rekey_re_signs_a_manifest_signed_under_an_older_key(aes, tmp_path):
    import shutil
    from seawall_pgbackup.codec.stored import sealing_for
    from seawall_pgbackup.ops.rekey import rewrite_reason
    env, old_id = aes
    newer = tmp_path / "keys-newer"
    newer.mkdir(mode=0o700)
    for name in os.listdir(env["BACKUP_ENCRYPTION_KEYRING"]):
        shutil.copy2(os.path.join(env["BACKUP_ENCRYPTION_KEYRING"], name), newer / name)
    new_id = write_key_file(str(newer), env["BACKUP_DIR"])["key_id"]
    # files already under the new key, manifest still signed under the old one
    doc = _document("full-app-20261120T020000Z", encryption=dict(AES, key_id=new_id))
    _write(env["BACKUP_DIR"], doc, _signed(env, doc))
    cfg = load_config(env=dict(env, BACKUP_ENCRYPTION_KEYRING=str(newer)))
    repo = open_repository(cfg)
    backup = repo.find(doc["id"])
    assert backup.manifest.auth.key_id == old_id and repo.trust.signer_id == new_id
    assert rewrite_reason(repo, backup, sealing_for(cfg)) == "signature"
    repo.save(backup)
    assert rewrite_reason(repo, repo.find(doc["id"]), sealing_for(cfg)) is None
