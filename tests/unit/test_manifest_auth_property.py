"""Issue #16, property: whoever can write to the repository cannot change one byte of a signed manifest, nor swap
manifests or data files between two backups, without the catalog refusing the result.

A repository of two backups is built on disk with the engine's own API; the manifests are signed with
``codec.authn`` (HMAC under the keyring's key) and written in their canonical form. The data files are plain
(``accept_unencrypted``): what is under test here is the manifest's authentication, not the file format.
No PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from typing import Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall_pgbackup.codec.authn import Trust, render_manifest
from seawall_pgbackup.codec.integrity import verify_checksums
from seawall_pgbackup.codec.keyring import write_key_file
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.core.errors import BackupError
from seawall_pgbackup.model.manifest import FORMAT_VERSION
from seawall_pgbackup.repo.catalog import open_repository

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class World:
    """A backup directory with two signed full backups of ``app`` (``ids[0]`` older), and the config reading it."""

    def __init__(self, root) -> None:
        keyring = os.path.join(str(root), "keys")
        os.makedirs(keyring, mode=0o700)
        write_key_file(keyring, None)
        self.dir = os.path.join(str(root), "backups")
        self.cfg = load_config(env={"BACKUP_DIR": self.dir, "BACKUP_ENCRYPTION": "true",
                                    "BACKUP_ENCRYPTION_KEYRING": keyring, "BACKUP_ACCEPT_UNENCRYPTED": "true"})
        repo = open_repository(self.cfg)
        repo.prepare()
        self.trust = Trust.from_config(self.cfg)
        self.ids: List[str] = []
        self.manifests: Dict[str, str] = {}   # id -> manifest path
        self.data: Dict[str, str] = {}        # id -> data file path
        self.documents: Dict[str, dict] = {}  # id -> the signed document
        for index in range(2):
            moment = T0 + timedelta(days=index)
            backup_id = repo.new_id("full", "app", moment)
            name = backup_id + ".dump.gz"
            payload = ("PGDMP backup %d " % index).encode() * 64
            data_path = os.path.join(repo.kind_dir("full"), name)
            with open(data_path, "wb") as handle:
                handle.write(payload)
            document = {"format_version": FORMAT_VERSION, "id": backup_id, "type": "full", "status": "ok",
                        "database": "app", "created_at": iso(moment), "finished_at": iso(moment),
                        "repository": self.cfg.repository_id, "compression": "gzip",
                        "files": [{"name": name, "role": "database", "size": len(payload),
                                   "sha256": hashlib.sha256(payload).hexdigest(), "compression": "gzip"}]}
            signed = self.trust.sign_document(document)
            assert signed.get("auth"), "sign_document added no auth record"
            path = repo.manifest_path("full", backup_id)
            with open(path, "wb") as handle:
                handle.write(render_manifest(signed))
            self.ids.append(backup_id)
            self.manifests[backup_id] = path
            self.data[backup_id] = data_path
            self.documents[backup_id] = signed

    def listed(self) -> List[str]:
        return [b.id for b in open_repository(self.cfg).backups()]

    def invalid(self) -> List[str]:
        return [where for where, _why in open_repository(self.cfg).invalid_manifests()]

    def snapshot(self) -> Dict[str, bytes]:
        found = {}
        for path in list(self.manifests.values()) + list(self.data.values()):
            with open(path, "rb") as handle:
                found[path] = handle.read()
        return found

    def restore(self, saved: Dict[str, bytes]) -> None:
        for path, data in saved.items():
            with open(path, "wb") as handle:
                handle.write(data)


@pytest.fixture(name="world", scope="module")
def _world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("signed"))


@pytest.fixture(name="pristine")
def _pristine(world):
    """The world as built, checked to be trusted (so a refusal below is the tampering's doing), restored after."""
    saved = world.snapshot()
    assert world.listed() == world.ids and world.invalid() == []
    yield world
    world.restore(saved)
    assert world.listed() == world.ids


def test_signed_manifests_are_rendered_canonically_and_listed(pristine):
    for backup_id in pristine.ids:
        with open(pristine.manifests[backup_id], "rb") as handle:
            raw = handle.read()
        document = json.loads(raw)
        assert raw == render_manifest(document)
        assert document["auth"]["algorithm"] == "hmac-sha256" and document["auth"]["value"]
        assert document["repository"] == "default"
        verify_checksums(open_repository(pristine.cfg).find(backup_id))


@PROPERTY
@given(which=st.integers(0, 1), position=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255))
def test_any_single_byte_change_of_a_manifest_is_refused(pristine, which, position, byte):
    backup_id = pristine.ids[which]
    path = pristine.manifests[backup_id]
    with open(path, "rb") as handle:
        original = handle.read()
    index = int(position * len(original))
    if original[index] == byte:
        byte ^= 0x01
    changed = bytearray(original)
    changed[index] = byte
    try:
        with open(path, "wb") as handle:
            handle.write(bytes(changed))
        # Canonical rendering is required, so no changed byte leaves the same trusted document.
        assert backup_id not in pristine.listed(), "byte %d of %s changed to %r and still listed" % (
            index, os.path.basename(path), bytes([byte]))
        assert pristine.ids[1 - which] in pristine.listed()  # the other backup is unaffected
    finally:
        with open(path, "wb") as handle:
            handle.write(original)


@PROPERTY
@given(which=st.integers(0, 1), position=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255))
def test_any_single_byte_change_of_a_data_file_fails_verification(pristine, which, position, byte):
    backup_id = pristine.ids[which]
    path = pristine.data[backup_id]
    with open(path, "rb") as handle:
        original = handle.read()
    index = int(position * len(original))
    if original[index] == byte:
        byte ^= 0x01
    changed = bytearray(original)
    changed[index] = byte
    try:
        with open(path, "wb") as handle:
            handle.write(bytes(changed))
        backup = open_repository(pristine.cfg).find(backup_id)
        with pytest.raises(BackupError):
            verify_checksums(backup)
    finally:
        with open(path, "wb") as handle:
            handle.write(original)


def test_swapped_manifests_are_refused(pristine):
    first, second = pristine.ids
    saved = pristine.snapshot()
    pristine.restore({pristine.manifests[first]: saved[pristine.manifests[second]],
                      pristine.manifests[second]: saved[pristine.manifests[first]]})
    assert pristine.listed() == []
    assert sorted(pristine.invalid()) == sorted(pristine.manifests.values())


def test_a_manifest_renamed_as_another_backup_and_re_rendered_is_refused(pristine):
    """The older backup's signed document given the newer one's id and file names: the signature covers them."""
    first, second = pristine.ids
    forged = json.loads(json.dumps(pristine.documents[first]))
    forged["id"] = second
    forged["created_at"] = pristine.documents[second]["created_at"]
    forged["finished_at"] = pristine.documents[second]["finished_at"]
    forged["files"][0]["name"] = os.path.basename(pristine.data[second])
    with open(pristine.data[first], "rb") as handle:
        old_bytes = handle.read()
    pristine.restore({pristine.manifests[second]: render_manifest(forged), pristine.data[second]: old_bytes})
    assert pristine.listed() == [first]
    assert pristine.invalid() == [pristine.manifests[second]]


def test_swapped_data_files_are_refused(pristine):
    first, second = pristine.ids
    saved = pristine.snapshot()
    pristine.restore({pristine.data[first]: saved[pristine.data[second]],
                      pristine.data[second]: saved[pristine.data[first]]})
    repo = open_repository(pristine.cfg)
    for backup_id in (first, second):  # the manifests still name the old sha256: checksums fail
        with pytest.raises(BackupError):
            verify_checksums(repo.find(backup_id))


@pytest.mark.parametrize("edit", ["sha256-and-size", "auth-removed", "auth-key-id", "repository"])
def test_swapped_data_files_with_manifests_rewritten_to_match_are_refused(pristine, edit):
    """The attacker swaps the data files and rewrites what it can of the manifests: the signature fails."""
    first, second = pristine.ids
    saved = pristine.snapshot()
    replaced = {pristine.data[first]: saved[pristine.data[second]],
                pristine.data[second]: saved[pristine.data[first]]}
    for backup_id in (first, second):
        document = json.loads(saved[pristine.manifests[backup_id]])
        data = replaced[pristine.data[backup_id]]
        document["files"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        if edit == "auth-removed":
            document.pop("auth")
        elif edit == "auth-key-id":
            document["auth"]["key_id"] = "0" * 16
        elif edit == "repository":
            document["repository"] = "another"
        replaced[pristine.manifests[backup_id]] = render_manifest(document)
    pristine.restore(replaced)
    assert pristine.listed() == []
    assert sorted(pristine.invalid()) == sorted(pristine.manifests.values())
