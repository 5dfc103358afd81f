"""Encrypted backups on a real PostgreSQL 15: both modes round trip, wrong/missing keys, tampering, rotation, rekey."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

import pytest

from tests.integration import cli
from tests.support import load_sample
from tests.support.compare import assert_same_database, table_checksums


@pytest.fixture(name="vtt")
def _vtt(pg15):
    name = "vtt_enc_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    yield name
    for db in pg15.databases():
        if db.startswith(name):
            pg15.drop_db(db)


def _manifest_path(backup_dir, backup):
    return os.path.join(str(backup_dir), backup["type"], backup["id"] + ".json")


def _manifest(backup_dir, backup):
    with open(_manifest_path(backup_dir, backup), encoding="utf-8") as handle:
        return json.load(handle)


def _keygen(env, keyring):
    return json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)


def _key_bytes(path):
    lines = [ln.strip() for ln in open(path, encoding="utf-8") if ln.strip() and not ln.startswith("#")]
    return bytes.fromhex(lines[0])


def _assert_no_key_material(backup_dir, backup, key: bytes):
    text = open(_manifest_path(backup_dir, backup), encoding="utf-8").read()
    for form in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        assert form not in text
    assert key not in open(_manifest_path(backup_dir, backup), "rb").read()


def _data_files(backup_dir, backup):
    return [os.path.join(str(backup_dir), backup["type"], f["name"]) for f in backup["files"]]


def test_aes_round_trip_verify_restore_and_no_key_material(pg15, vtt, tmp_path):
    backup_dir, keyring = tmp_path / "backups", tmp_path / "keys"
    env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keyring),
                      PGPASSFILE=str(pg15.passfile))
    key = _keygen(env, keyring)
    full = cli.create(env, "full")
    assert full["encryption"]["algorithm"] == "aes-256-gcm" and full["encryption"]["key_id"] == key["key_id"]
    for path in _data_files(backup_dir, full):
        assert path.endswith(".gz.enc")
        with open(path, "rb") as handle:
            assert handle.read(8) == b"SWPGAES\x02"  # format version 2: bound to its backup (issue 16)
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() in json.dumps(full)
    _assert_no_key_material(backup_dir, full, _key_bytes(key["path"]))
    out = json.loads(cli.run(["verify", full["id"], "--level", "restore", "--json"], env).stdout)[0]
    assert out["ok"] is True and "archive entries" in out["details"] and "globals script complete" in out["details"]
    copy = vtt + "_copy"
    cli.run(["restore", full["id"], "--target-url", pg15.url(copy, with_password=False), "--jobs", "2"], env)
    assert_same_database(pg15, vtt, pg15, copy)
    drill = json.loads(cli.run(["drill", "--json"], env).stdout)
    assert drill["ok"] is True and drill["backup_id"] == full["id"]
    # Schema then data (the data restore streams through pg_restore into psql), both encrypted.
    schema, data = cli.create(env, "schema"), cli.create(env, "data")
    split = vtt + "_split"
    cli.run(["restore", schema["id"], "--target-url", pg15.url(split, with_password=False)], env)
    cli.run(["restore", data["id"], "--target-url", pg15.url(split, with_password=False)], env)
    assert table_checksums(pg15, split) == table_checksums(pg15, vtt)


def _resign(env, path, document) -> None:
    """Sign ``document`` with the keys ``env`` configures (what only a holder of the key can do) into ``path``."""
    from seawall_pgbackup.codec.authn import Trust, render_manifest  # pylint: disable=import-outside-toplevel
    from seawall_pgbackup.config.settings import load_config  # pylint: disable=import-outside-toplevel

    trust = Trust.from_config(load_config(env=env))
    with open(path, "wb") as handle:
        handle.write(render_manifest(trust.sign_document(document)))


def _signing_key(directory) -> str:
    """An Ed25519 manifest signing key (age-mode backup hosts need one); returns its path."""
    path = directory / "signing.pem"
    cli.run(["keygen", "--signing", "--output", str(path)], cli.cli_env(None, directory / "nowhere"))
    return str(path)


def test_age_backup_host_holds_only_the_public_key(pg15, vtt, tmp_path):
    backup_dir = tmp_path / "backups"
    identity_file = tmp_path / "restore-side" / "age.key"
    identity_file.parent.mkdir()
    made = json.loads(cli.run(["keygen", "--age", str(identity_file), "--json"],
                              cli.cli_env(None, backup_dir)).stdout)
    assert oct(os.stat(identity_file).st_mode & 0o777) == "0o600"
    backup_env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_MODE="age",
                             BACKUP_ENCRYPTION_RECIPIENTS=made["recipient"], PGPASSFILE=str(pg15.passfile),
                             BACKUP_ENCRYPTION_SIGNING_KEY_FILE=_signing_key(tmp_path))
    full = cli.create(backup_env, "full")
    assert full["encryption"] == {"algorithm": "age-x25519", "format": "age-encryption.org/v1+seawall-binding-v1",
                                  "key_id": made["key_id"], "key_ids": [made["key_id"]]}
    assert all(p.endswith(".age") and open(p, "rb").read(21) == b"age-encryption.org/v1"
               for p in _data_files(backup_dir, full))
    # The backup host can check checksums, not decrypt; that is not the backup's fault.
    cli.run(["verify", full["id"], "--level", "checksum"], backup_env)
    line = cli.error_line(cli.run(["verify", full["id"], "--level", "archive"], backup_env, check=False))
    assert "needs the age identity of key id %s" % made["key_id"] in line
    assert _manifest(backup_dir, full)["verification"]["level"] == "checksum"
    restore_env = dict(backup_env, BACKUP_ENCRYPTION_IDENTITY_FILE=str(identity_file))
    out = json.loads(cli.run(["verify", full["id"], "--level", "restore", "--json"], restore_env).stdout)[0]
    assert out["ok"] is True
    copy = vtt + "_age"
    cli.run(["restore", full["id"], "--target-url", pg15.url(copy, with_password=False)], restore_env)
    assert_same_database(pg15, vtt, pg15, copy)
    secret = [ln for ln in identity_file.read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")][0]
    assert secret not in open(_manifest_path(backup_dir, full), encoding="utf-8").read()


def test_wrong_key_missing_key_tampered_and_truncated_files(pg15, vtt, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_ENCRYPTION="true",
                      BACKUP_ENCRYPTION_KEYRING=str(tmp_path / "keys-a"), PGPASSFILE=str(pg15.passfile))
    key_a = _keygen(env, tmp_path / "keys-a")
    first, second = cli.create(env, "full"), cli.create(env, "full")
    target = pg15.url(vtt + "_r", with_password=False)

    wrong = dict(env, BACKUP_ENCRYPTION_KEYRING=str(tmp_path / "keys-b"))
    _keygen(wrong, tmp_path / "keys-b")
    proc = cli.run(["restore", first["id"], "--target-url", target], wrong, check=False)
    assert proc.returncode == 12  # a key missing here, not a bad backup
    assert "signed with key id %s, which is not in the keyring" % key_a["key_id"] in cli.error_line(proc)
    missing = {k: v for k, v in env.items() if not k.startswith("BACKUP_ENCRYPTION")}
    line = cli.error_line(cli.run(["restore", first["id"], "--target-url", target], missing, check=False))
    assert "needs aes-256-gcm key id %s" % key_a["key_id"] in line
    line = cli.error_line(cli.run(["verify", first["id"]], missing, check=False))
    assert key_a["key_id"] in line
    assert _manifest(backup_dir, first)["verification"] is None  # a missing key never marks a backup bad
    assert vtt + "_r" not in pg15.databases()

    # Tampered (one byte flipped) and truncated files whose manifests were rewritten to match:
    # only authentication can tell, and it does, with nothing restored and no file left behind.
    for backup, damage in ((first, "flip"), (second, "truncate")):
        path = _data_files(backup_dir, backup)[0]
        blob = bytearray(open(path, "rb").read())
        if damage == "flip":
            blob[len(blob) // 2] ^= 0x10
        else:
            del blob[-(1 << 10):]
        with open(path, "wb") as handle:
            handle.write(bytes(blob))
        manifest = _manifest(backup_dir, backup)
        manifest["files"][0].update(size=len(blob), sha256=hashlib.sha256(bytes(blob)).hexdigest())
        with open(_manifest_path(backup_dir, backup), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
        # the manifest's signature no longer matches: refused before any byte is read
        line = cli.error_line(cli.run(["restore", backup["id"], "--target-url", target], env, check=False))
        assert "is not trusted" in line and "signed" in line, line
        # an insider with the key re-signs it: the data's own authentication still refuses the bytes
        _resign(env, _manifest_path(backup_dir, backup), manifest)
        before = sorted(os.listdir(os.path.dirname(path)))
        line = cli.error_line(cli.run(["restore", backup["id"], "--target-url", target], env, check=False))
        assert "fails authentication" in line and key_a["key_id"] in line, line
        assert vtt + "_r" not in pg15.databases()
        assert not [d for d in pg15.databases() if "seawall" in d or d.startswith(vtt + "_r")]
        assert sorted(os.listdir(os.path.dirname(path))) == before
        line = cli.error_line(cli.run(["verify", backup["id"], "--level", "archive"], env, check=False))
        assert "fails authentication" in line
        assert _manifest(backup_dir, backup)["verification"]["ok"] is False


def test_rotation_and_rekey(pg15, vtt, tmp_path, monkeypatch):
    backup_dir, keyring = tmp_path / "backups", tmp_path / "keys"
    env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keyring),
                      PGPASSFILE=str(pg15.passfile))
    key_a = _keygen(env, keyring)
    old = cli.create(env, "full")
    key_b = _keygen(env, keyring)
    new = cli.create(env, "full")
    assert old["encryption"]["key_id"] == key_a["key_id"] and new["encryption"]["key_id"] == key_b["key_id"]
    results = json.loads(cli.run(["verify", "--level", "archive", "--json"], env).stdout)
    assert [r["ok"] for r in results] == [True, True]  # the old one found key A in the keyring by its id

    # An interrupted rekey (after the new copy was written, before it was checked) keeps the original.
    from seawall_pgbackup.ops import rekey as rekey_module
    from seawall_pgbackup.config.settings import load_config

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    cfg = load_config(env=env)
    original = open(_manifest_path(backup_dir, old), "rb").read()
    files_before = sorted(os.listdir(backup_dir / "full"))
    monkeypatch.setattr(rekey_module, "_verify_copy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rekey_module.rekey(cfg, everything=True)
    monkeypatch.undo()
    assert open(_manifest_path(backup_dir, old), "rb").read() == original
    assert sorted(os.listdir(backup_dir / "full")) == files_before
    cli.run(["verify", old["id"], "--level", "archive"], env)

    out = json.loads(cli.run(["rekey", "--all", "--json"], env).stdout)
    assert [(r["id"], r["changed"]) for r in out] == [(old["id"], True), (new["id"], False)]
    moved = _manifest(backup_dir, old)
    assert moved["encryption"]["key_id"] == key_b["key_id"]
    assert moved["rekeyed"][0]["from"] == key_a["key_id"] and moved["rekeyed"][0]["to"] == key_b["key_id"]
    names = sorted(os.listdir(backup_dir / "full"))
    for entry in old["files"]:
        assert entry["name"] not in names  # the old copies are gone ...
    for entry in moved["files"]:
        assert entry["name"] in names      # ... and the new ones are named in the manifest
    assert not [n for n in names if n.endswith(".partial")]
    # Key A can go: everything reads with key B alone.
    os.unlink(key_a["path"])
    results = json.loads(cli.run(["verify", "--level", "archive", "--json"], env).stdout)
    assert [r["ok"] for r in results] == [True, True]
    copy = vtt + "_rekeyed"
    cli.run(["restore", old["id"], "--target-url", pg15.url(copy, with_password=False)], env)
    assert table_checksums(pg15, copy) == table_checksums(pg15, vtt)
    # A second rekey changes nothing.
    out = json.loads(cli.run(["rekey", "--all", "--json"], env).stdout)
    assert [r["changed"] for r in out] == [False, False]


def test_refused_key_file_mode_and_unencrypted_to_encrypted_rekey(pg15, vtt, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir, PGPASSFILE=str(pg15.passfile))
    plain = cli.create(env, "schema")
    assert plain["encryption"] is None
    key_file = tmp_path / "loose.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    key_file.chmod(0o644)
    loose = dict(env, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEY_FILE=str(key_file))
    line = cli.error_line(cli.run(["create", "--type", "schema"], loose, check=False))
    assert "%s has mode 0644" % key_file in line
    assert len(cli.listing(env)) == 1
    key_file.chmod(0o600)
    # made before encryption (and signing) was configured: trusted only explicitly, to migrate it
    assert "not signed" in cli.error_line(cli.run(["rekey", plain["id"]], loose, check=False))
    out = json.loads(cli.run(["rekey", plain["id"], "--json", "--accept-unsigned"], loose).stdout)
    assert out[0]["changed"] is True and out[0]["from"] is None
    assert _manifest(backup_dir, plain)["encryption"]["algorithm"] == "aes-256-gcm"
    cli.run(["verify", plain["id"], "--level", "archive"], loose)


def test_age_rekey_to_new_recipients_needs_and_uses_the_identities(pg15, vtt, tmp_path):
    backup_dir, secure = tmp_path / "backups", tmp_path / "secure"
    secure.mkdir()
    keygen_env = cli.cli_env(None, backup_dir)
    first = json.loads(cli.run(["keygen", "--age", str(secure / "first.txt"), "--json"], keygen_env).stdout)
    second = json.loads(cli.run(["keygen", "--age", str(secure / "second.txt"), "--json"], keygen_env).stdout)
    env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_MODE="age",
                      BACKUP_ENCRYPTION_RECIPIENTS=first["recipient"], PGPASSFILE=str(pg15.passfile),
                      BACKUP_ENCRYPTION_SIGNING_KEY_FILE=_signing_key(secure))
    schema = cli.create(env, "schema")
    assert schema["encryption"]["key_id"] == first["key_id"]
    # Both identities in one age identity file (age's own format allows several).
    both = secure / "both.txt"
    both.write_text((secure / "first.txt").read_text() + (secure / "second.txt").read_text())
    both.chmod(0o600)
    moved = dict(env, BACKUP_ENCRYPTION_RECIPIENTS=second["recipient"])
    line = cli.error_line(cli.run(["rekey", "--all"], moved, check=False))
    assert "needs an identity of key id %s" % second["key_id"] in line
    moved["BACKUP_ENCRYPTION_IDENTITY_FILE"] = str(both)
    out = json.loads(cli.run(["rekey", "--all", "--json"], moved).stdout)
    assert out[0]["changed"] is True and out[0]["from"] == first["key_id"] and out[0]["to"] == second["key_id"]
    # Only the second identity is needed from now on.
    only_second = dict(moved, BACKUP_ENCRYPTION_IDENTITY_FILE=str(secure / "second.txt"))
    cli.run(["verify", schema["id"], "--level", "archive"], only_second)
    only_first = dict(moved, BACKUP_ENCRYPTION_IDENTITY_FILE=str(secure / "first.txt"))
    line = cli.error_line(cli.run(["verify", schema["id"], "--level", "archive"], only_first, check=False))
    assert "needs the age identity of key id %s" % second["key_id"] in line
