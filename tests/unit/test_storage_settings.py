"""Destination settings (JSON shape + BACKUP_<TYPE>_* variables), secret refusal, redaction, a directory destination."""

from __future__ import annotations

import hashlib
import os

import pytest

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.store import find_settings, open_destination, remote_settings
from seawall_pgbackup.store.base import one_line, redact
from seawall_pgbackup.config.destinations import parse_destinations, parse_one, read_credentials_file


def test_strategy_shape_and_defaults():
    found = {s.name: s for s in parse_destinations(
        {"local": {"enabled": True}, "s3": {"enabled": True, "encryption": True, "bucket": "b"},
         "azure": {"enabled": False, "container": "c"}, "gcs": {"bucket": "g"}}, {})}
    assert found["local"].is_primary
    assert found["s3"].sse == "AES256" and found["s3"].storage_class is None
    assert found["azure"].storage_class == "Cool" and not found["azure"].enabled  # the strategy's Cool tier
    assert found["gcs"].storage_class == "NEARLINE"  # and Nearline
    assert [s.name for s in parse_destinations({"gcs": {"bucket": "g"}, "local": {}}, {}) if s.enabled and not s.is_primary] == ["gcs"]


def test_environment_turns_a_destination_on_and_overrides_the_file():
    env = {"BACKUP_S3_BUCKET": "from-env", "BACKUP_S3_ENDPOINT": "http://127.0.0.1:9000", "BACKUP_S3_PREFIX": "/pg/",
           "BACKUP_S3_STORAGE_CLASS": "STANDARD_IA", "BACKUP_UPLOAD_PART_SIZE_MB": "16"}
    (s3,) = parse_destinations({"s3": {"enabled": False, "bucket": "from-file"}}, env)
    assert s3.enabled is False  # an explicit "enabled": false in the file stays off unless BACKUP_S3_ENABLED
    (s3,) = parse_destinations({}, env)
    assert (s3.enabled, s3.bucket, s3.prefix, s3.storage_class, s3.part_size) == (
        True, "from-env", "pg", "STANDARD_IA", 16 * 1024 * 1024)


def test_named_copies_of_one_type_and_kms():
    (dr,) = parse_destinations({"s3-dr": {"type": "s3", "bucket": "dr", "encryption": True, "kmsKeyId": "k1"}}, {})
    assert (dr.kind, dr.sse, dr.kms_key_id) == ("s3", "aws:kms", "k1")


@pytest.mark.parametrize("raw, message", [
    ({"type": "ftp"}, "use one of local, s3, azure, gcs"),
    ({"type": "s3", "secretAccessKey": "hunter2"}, "secrets are not accepted"),
    ({"type": "azure", "accountKey": "hunter2"}, "secrets are not accepted"),
    ({"type": "s3", "bucket": "b", "partSizeMB": 1}, "partSizeMB=1 is not valid: expected a number from 5"),
    ({"type": "s3", "bucket": "b", "endpoint": "ftp://x"}, "expected an http:// or https:// URL"),
    ({"type": "s3", "bucket": "b", "verifyUpload": "maybe"}, "use stream"),
    ({"type": "s3", "bucket": "b", "colour": "red"}, "unknown key"),
])
def test_bad_settings_are_named(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_one("x", raw)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_bucket_fails_when_used_not_when_loaded():
    cfg = load_config(env={"BACKUP_S3_ENDPOINT": "http://127.0.0.1:1"})
    assert remote_settings(cfg) == []  # an endpoint alone turns nothing on
    cfg = load_config(env={"BACKUP_S3_ENDPOINT": "http://127.0.0.1:1", "BACKUP_S3_ENABLED": "true"})
    (s3,) = remote_settings(cfg)
    with pytest.raises(ConfigError, match="needs a bucket"):
        open_destination(s3)
    with pytest.raises(ConfigError, match="is not configured"):
        find_settings(cfg, "azure")


def test_credentials_file_must_be_private(tmp_path):
    path = tmp_path / "aws"
    path.write_text("# comment\nexport AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY='s3cr3t'\n")
    os.chmod(path, 0o644)
    settings = parse_one("s3", {"bucket": "b", "credentialsFile": str(path)})
    with pytest.raises(ConfigError, match="readable by others"):
        read_credentials_file(settings)
    os.chmod(path, 0o600)
    assert read_credentials_file(settings) == {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}


def test_redaction_of_signed_urls_and_headers():
    text = ("Error performing PUT https://acct.blob.core.windows.net/c/x?sv=2021&sig=SECRETSIG&se=2030 "
            "X-Amz-Credential=AKIA/x&X-Amz-Signature=abc123 Authorization: SharedKey acct:SIGNATURE")
    out = redact(text)
    for secret in ("SECRETSIG", "abc123", "AKIA/x", "SIGNATURE"):
        assert secret not in out
    assert one_line(RuntimeError("first line sig=zzz\nDebug source: {secret}")) == "first line sig=***"


def test_directory_destination_round_trip(tmp_path):
    dest = open_destination(parse_one("copy", {"type": "local", "path": str(tmp_path / "copy")}))
    source = tmp_path / "f"
    source.write_bytes(b"x" * 3_000_000)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    info = dest.put_file("full/f.dump", str(source), 3_000_000, sha)
    assert info.size == 3_000_000 and dest.head("full/missing") is None
    assert hashlib.sha256(b"".join(dest.read("full/f.dump"))).hexdigest() == sha
    dest.put_bytes("full/f.json", b"{}")
    assert [o.key for o in dest.list("full/")] == ["full/f.dump", "full/f.json"]
    dest.delete("full/f.json")
    dest.delete("full/f.json")  # idempotent
    assert [o.key for o in dest.list()] == ["full/f.dump"]
    with pytest.raises(ConfigError.__mro__[1], match="leaves the destination"):
        dest.head("../escape")


def test_a_failed_destination_does_not_stop_the_others_and_keeps_the_backup(tmp_path):
    """sync over a real backup directory: a destination without its bucket fails by name, a directory copy works."""
    import json as _json
    from seawall_pgbackup.model.manifest import FORMAT_VERSION
    from seawall_pgbackup.repo.catalog import Repository
    from seawall_pgbackup.ops.sync import raise_failures, sync

    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    data = b"PGDMP" + b"\0" * 1000
    (tmp_path / "backups" / "full" / "full-db-20261126T020000Z.dump").write_bytes(data)
    manifest = {"format_version": FORMAT_VERSION, "id": "full-db-20261126T020000Z", "type": "full", "status": "ok",
                "database": "db", "created_at": "2026-11-26T02:00:00.000000Z",
                "files": [{"name": "full-db-20261126T020000Z.dump", "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()}]}
    (tmp_path / "backups" / "full" / "full-db-20261126T020000Z.json").write_text(_json.dumps(manifest))
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path / "backups"), "BACKUP_S3_ENABLED": "yes",
                           "BACKUP_LOCAL_PATH": str(tmp_path / "nas")})
    result = sync(cfg)
    assert [c["destination"] for c in result["copied"]] == ["local"]
    assert [f["destination"] for f in result["failed"]] == ["s3"] and "needs a bucket" in result["failed"][0]["error"]
    with pytest.raises(Exception, match="the copy to destination 's3' failed"):
        raise_failures(result)
    assert (tmp_path / "nas" / "full" / "full-db-20261126T020000Z.json").exists()
    recorded = _json.loads((tmp_path / "backups" / "full" / "full-db-20261126T020000Z.json").read_text())
    assert [c["destination"] for c in recorded["copies"]] == ["local"]
    assert sync(cfg)["present"] == 1  # the directory copy is not made twice
