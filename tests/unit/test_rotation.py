"""Rotation (issue #16): which backups rekey rewrites, a killed rekey's files, stale copies, the health check
"keys", and manifests refused by the signature check named by health."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.codec.authn import Trust, mac_key
from seawall_pgbackup.codec.integrity import sha256_file
from seawall_pgbackup.codec.stored import Sealing
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Auth, Backup, Encryption
from seawall_pgbackup.ops.health_checks import check_catalog, check_keys
from seawall_pgbackup.codec.crypto import BOUND_FORMATS
from seawall_pgbackup.ops.rekey import remove_crash_leftovers, rewrite_reason
from seawall_pgbackup.ops.sync import copy_state, remove_unnamed_objects
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.store import LocalStore

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
KEY_A, KEY_B = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
V1 = "seawall-aes-256-gcm-chunked-v1"
V2 = "seawall-aes-256-gcm-chunked-v2"


def _backup(repo: Repository, key_id=KEY_A, fmt=V1, copies=(), age=timedelta(hours=1)) -> Backup:
    moment = NOW - age
    backup_id = repo.new_id("full", "app", moment)
    name = backup_id + ".dump.gz.enc"
    path = os.path.join(repo.kind_dir("full"), name)
    with open(path, "wb") as handle:
        handle.write(os.urandom(100))
    document = {"format_version": FORMAT_VERSION, "id": backup_id, "type": "full", "status": "ok",
                "database": "app", "created_at": iso(moment), "finished_at": iso(moment + timedelta(minutes=1)),
                "files": [{"name": name, "role": "database", "size": 100, "sha256": sha256_file(path)}],
                "copies": list(copies)}
    if key_id:
        document["encryption"] = {"algorithm": "aes-256-gcm", "format": fmt, "key_id": key_id}
    backup = Backup(document, repo.manifest_path("full", backup_id))
    backup.save()
    return backup


@pytest.fixture(name="repo")
def _repo(tmp_path):
    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    return repo


class _Sealing(Sealing):
    """A sealing whose record names ``fmt`` (the format the installed codec writes is not this test's concern)."""

    def __init__(self, key_id: str, fmt: str) -> None:
        super().__init__("aes-256-gcm", key=b"k" * 32, key_id=key_id)
        self.fmt = fmt

    def record(self):
        return {"algorithm": "aes-256-gcm", "format": self.fmt, "key_id": self.key_id}


def test_rekey_rewrites_another_key_an_unbound_format_or_an_unsigned_manifest(repo):
    inactive = repo
    old_key = _backup(repo, KEY_A, V2)
    assert rewrite_reason(inactive, old_key, _Sealing(KEY_B, V2)) == "key"
    assert rewrite_reason(inactive, old_key, _Sealing(KEY_A, V2)) is None  # current: kept
    unbound = _backup(repo, KEY_A, V1, age=timedelta(hours=2))
    assert rewrite_reason(inactive, unbound, _Sealing(KEY_A, V2)) == "format"
    # a codec that writes only the old format does not make its own files "unbound" forever
    assert rewrite_reason(inactive, unbound, _Sealing(KEY_A, V1)) is None
    assert V2 in BOUND_FORMATS and "age-encryption.org/v1+seawall-binding-v1" in BOUND_FORMATS
    signing = Repository(repo.root, trust=Trust(active=True, accept_unsigned=True))
    assert old_key.manifest.auth is None
    assert rewrite_reason(signing, old_key, _Sealing(KEY_A, V2)) == "unsigned"
    old_key.manifest.auth = Auth(algorithm="hmac-sha256", key_id=KEY_A, value="00")
    assert rewrite_reason(signing, old_key, _Sealing(KEY_A, V2)) is None


def test_a_killed_rekeys_files_of_that_backup_go_and_nothing_else(repo):
    backup = _backup(repo)
    other = _backup(repo, age=timedelta(hours=3))
    folder = repo.kind_dir("full")
    stale = [backup.id + ".dump.gz.rekey1.enc", backup.id + ".dump.gz.rekey1.enc.partial",
             "." + backup.id + ".json.123-abcd.tmp"]
    kept = ["notes.txt", backup.id + "-2.dump.gz.enc", backup.id + ".dump.gz.bak"]
    for name in stale + kept:
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"x")
    removed = remove_crash_leftovers(repo, backup)
    assert sorted(os.path.basename(p) for p in removed) == sorted(stale)
    left = set(os.listdir(folder))
    assert set(kept) <= left and not set(stale) & left
    for b in (backup, other):  # what the manifests name is untouched
        assert {f.name for f in b.manifest.files} <= left and b.id + ".json" in left


def test_copy_state_follows_the_key(repo):
    copies = [{"destination": "s3", "key_id": KEY_A, "copied_at": iso(NOW)},
              {"destination": "old", "copied_at": iso(NOW)},
              {"destination": "gone", "removed_at": iso(NOW), "reason": "retention at the destination"}]
    backup = _backup(repo, KEY_A, copies=copies)
    assert [copy_state(backup, n) for n in ("s3", "old", "gone", "azure")] == ["current", "stale", "removed", "none"]
    backup.manifest.encryption = Encryption(algorithm="aes-256-gcm", format=V2, key_id=KEY_B)
    assert copy_state(backup, "s3") == "stale"
    plain = _backup(repo, None, copies=[{"destination": "s3", "copied_at": iso(NOW)}], age=timedelta(hours=4))
    assert copy_state(plain, "s3") == "current"


def test_unnamed_objects_of_the_backup_go_at_the_destination(repo, tmp_path):
    backup = _backup(repo)
    dest_root = tmp_path / "second"
    (dest_root / "full").mkdir(parents=True)
    named = [f.name for f in backup.manifest.files] + [backup.id + ".json"]
    old = [backup.id + ".dump.gz.rekey1.enc", backup.id + ".dump.gz.partial"]
    foreign = ["readme.txt", backup.id + "-2.dump.gz.enc", "full-app-20200101T000000Z.dump.gz.enc"]
    for name in named + old + foreign:
        (dest_root / "full" / name).write_bytes(b"x")
    removed = remove_unnamed_objects(LocalStore("second", str(dest_root)), backup)
    assert sorted(removed) == sorted("full/" + n for n in old)
    assert sorted(os.listdir(dest_root / "full")) == sorted(named + foreign)


def test_health_keys_warns_while_anything_depends_on_a_retired_key(repo):
    assert check_keys(repo, [], [KEY_B])["status"] == "ok"
    first = _backup(repo, KEY_A, copies=[{"destination": "s3", "key_id": KEY_A, "copied_at": iso(NOW)}])
    _backup(repo, KEY_B, copies=[{"destination": "s3", "key_id": KEY_B, "copied_at": iso(NOW)}],
            age=timedelta(hours=2))
    result = check_keys(repo, [KEY_A], [KEY_B])
    assert result["status"] == "warning", result
    assert "1 local backup depends on retired key id %s" % KEY_A in result["reason"]
    assert "1 copy at destinations depends on retired key id %s" % KEY_A in result["reason"]
    assert "rekey" in result["reason"] and "--" not in result["reason"]
    assert result["local"] == {KEY_A: 1} and result["copies"] == {KEY_A: 1}
    # the write key itself retired: new backups would still use it
    writing = check_keys(repo, [KEY_B], [KEY_B])
    assert writing["status"] == "warning" and "new backups" in writing["reason"], writing
    # rewritten here (under B), copy not yet uploaded again: still a warning, not under the local key
    first.manifest.encryption = Encryption(algorithm="aes-256-gcm", format=V2, key_id=KEY_B)
    first.manifest.copies[0].key_id = None
    first.save()
    stale = check_keys(repo, [KEY_A], [KEY_B])
    assert stale["status"] == "warning" and "1 copy at destinations is not under" in stale["reason"], stale
    first.manifest.copies[0].key_id = KEY_B
    first.save()
    done = check_keys(repo, [KEY_A], [KEY_B])
    assert done["status"] == "ok" and KEY_A in done["reason"], done


def test_health_names_a_manifest_the_signature_check_refuses(repo):
    key = os.urandom(32)
    trust = Trust(active=True, mac_keys={KEY_A: mac_key(key)}, write_mac_id=KEY_A, aes_ids={KEY_A},
                  encrypted_kinds={"full"})
    signed_repo = Repository(repo.root, trust=trust)
    unsigned = _backup(repo, KEY_A)
    signed = _backup(repo, KEY_A, age=timedelta(hours=2))
    signed_repo.save(signed)
    assert [b.id for b in signed_repo.backups()] == [signed.id]
    result = check_catalog(signed_repo)
    assert result["status"] == "critical", result
    assert result["invalid"] == [unsigned.manifest_path]
    assert "%s: the manifest is not signed" % unsigned.manifest_path in result["reason"]
    # changed after it was signed: named too
    with open(signed.manifest_path, "rb") as handle:
        data = handle.read()
    with open(signed.manifest_path, "wb") as handle:
        handle.write(data.replace(b'"status": "ok"', b'"status": "ok" '))
    result = check_catalog(signed_repo)
    assert sorted(result["invalid"]) == sorted([unsigned.manifest_path, signed.manifest_path]), result
    assert "not in its signed form" in result["reason"]
