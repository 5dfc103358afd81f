"""Data bound to its backup (issue 16): an encrypted file authenticates only under the repository id, backup id
and file name its manifest gives it, in both modes; old unbound files still read, and a record and a file that
disagree on the format are refused. Hypothesis: any single-byte change of an encrypted file fails (or changes
nothing), and any swap of files between two backups fails."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seawall_pgbackup.codec import crypto
from seawall_pgbackup.codec.crypto import (AES_MODE, AGE_MODE, HEADER, AesReader, AesWriter, AgeWriter,
                                           AuthenticationFailed, Binding, aes_key_id, age_key_id, is_bound,
                                           read_aes_header)
from seawall_pgbackup.codec.keyring import Keyring
from seawall_pgbackup.codec.stored import Sealing, StoredWriter, binding_of, open_decrypted, open_stored, require_keys
from seawall_pgbackup.core.errors import VerifyError
from seawall_pgbackup.model import manifest as model
from seawall_pgbackup.model.manifest import Backup

KEY = bytes(range(32))
ID_A = "full-app-20261126T020000Z"
ID_B = "full-app-20261127T020000Z"
MODES = [AES_MODE, AGE_MODE]


def _pyrage():
    return pytest.importorskip("pyrage") if not os.environ.get("CI") else __import__("pyrage")


class Keys:
    """One aes key and one age identity, as a Sealing (write) and a Keyring (read) per mode."""

    def __init__(self) -> None:
        pyrage = _pyrage()
        self.identity = pyrage.x25519.Identity.generate()
        self.recipient = self.identity.to_public()
        self.age_id = age_key_id(str(self.recipient))
        self.ring = Keyring(aes_keys={aes_key_id(KEY): KEY}, identities={self.age_id: self.identity})

    def sealing(self, mode: str) -> Sealing:
        if mode == AES_MODE:
            return Sealing(AES_MODE, key=KEY, key_id=aes_key_id(KEY))
        return Sealing(AGE_MODE, recipients=[self.recipient], key_id=self.age_id, key_ids=[self.age_id])


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _encrypt(sealing: Sealing, data: bytes, binding) -> bytes:
    out = io.BytesIO()
    if binding is None:  # the old format, as the engine wrote it before the binding
        writer = (AesWriter(out.write, KEY, 1024) if sealing.mode == AES_MODE
                  else AgeWriter(out.write, sealing.recipients))
    elif sealing.mode == AES_MODE:
        writer = AesWriter(out.write, KEY, 1024, binding=binding)  # small chunks: several per file
    else:
        writer = sealing.writer(out.write, binding)
    writer.write(data)
    writer.close()
    return out.getvalue()


def _old_record(sealing: Sealing) -> dict:
    record = sealing.record()
    record["format"] = {AES_MODE: "seawall-aes-256-gcm-chunked-v1", AGE_MODE: "age-encryption.org/v1"}[sealing.mode]
    return record


def _read(tmp_path: Path, blob: bytes, record, ring, binding) -> bytes:
    path = tmp_path / "file.enc"
    path.write_bytes(blob)
    with open_decrypted(str(path), record, ring, "%s file %s" % (ID_A, "x"), ID_A, binding) as plain:
        return plain.read()


BOUND = Binding("prod", ID_A, ID_A + ".dump.gz.enc")


# ----------------------------------------------------------------------------- the binding itself

def test_the_context_names_all_three_fields_and_refuses_nul():
    assert BOUND.context() == b"seawall-pgbackup binding v1\0prod\0" + ID_A.encode() + b"\0" + ID_A.encode() \
        + b".dump.gz.enc"
    assert Binding.from_context(BOUND.context()) == BOUND and Binding.from_context(b"other") is None
    with pytest.raises(ValueError):
        Binding("prod\0x", ID_A, "n")


def test_bound_formats_agree_between_codec_and_model():
    assert model.BOUND_ENCRYPTION_FORMATS == crypto.BOUND_FORMATS
    assert is_bound(Sealing(AES_MODE, key=KEY, key_id="k").record())
    assert not is_bound({"algorithm": "aes-256-gcm", "format": "seawall-aes-256-gcm-chunked-v1"})
    assert not is_bound(None) and not is_bound({"algorithm": "aes-256-gcm"})


# ----------------------------------------------------------------------------- what the binding refuses

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("other", [Binding("prod", ID_B, ID_A + ".dump.gz.enc"),            # another backup
                                   Binding("prod", ID_A, ID_A + ".globals.sql.gz.enc"),     # another file
                                   Binding("staging", ID_A, ID_A + ".dump.gz.enc")],        # another repository
                         ids=["backup id", "file name", "repository"])
def test_a_file_read_under_another_binding_fails(tmp_path, keys, mode, other):
    sealing = keys.sealing(mode)
    data = os.urandom(5000)
    blob = _encrypt(sealing, data, BOUND)
    assert _read(tmp_path, blob, sealing.record(), keys.ring, BOUND) == data
    with pytest.raises(AuthenticationFailed, match=r"moved or replayed") as caught:
        _read(tmp_path, blob, sealing.record(), keys.ring, other)
    message = str(caught.value)
    assert "\n" not in message and other.describe() in message
    if mode == AES_MODE:  # the header says where the file belongs
        assert "is bound to %s, not %s" % (BOUND.describe(), other.describe()) in message


@pytest.mark.parametrize("mode", MODES)
def test_old_unbound_files_still_read(tmp_path, keys, mode):
    sealing = keys.sealing(mode)
    data = os.urandom(3000)
    blob = _encrypt(sealing, data, None)
    # The record says v1: the binding the reader knows is not asked for.
    assert _read(tmp_path, blob, _old_record(sealing), keys.ring, BOUND) == data
    record = _old_record(sealing)
    del record["format"]  # manifests older than the format field
    assert _read(tmp_path, blob, record, keys.ring, BOUND) == data


@pytest.mark.parametrize("mode", MODES)
def test_a_record_and_a_file_that_disagree_on_the_format_fail(tmp_path, keys, mode):
    sealing = keys.sealing(mode)
    data = os.urandom(3000)
    old, new = _encrypt(sealing, data, None), _encrypt(sealing, data, BOUND)
    with pytest.raises(AuthenticationFailed, match="carries no binding|unbound format version 1"):
        _read(tmp_path, old, sealing.record(), keys.ring, BOUND)  # a v1 file under a v2 record
    with pytest.raises(AuthenticationFailed, match="carries a binding"):
        _read(tmp_path, new, _old_record(sealing), keys.ring, BOUND)  # a v2 file under a v1 record


def test_a_v2_file_dressed_as_v1_fails_authentication(tmp_path, keys):
    """Strip the context and set version 1: the header is then what v1 authenticates, but the tags are not."""
    sealing = keys.sealing(AES_MODE)
    blob = _encrypt(sealing, os.urandom(3000), BOUND)
    length = int.from_bytes(blob[HEADER.size:HEADER.size + 2], "big")
    downgraded = blob[:7] + b"\x01" + blob[8:HEADER.size] + blob[HEADER.size + 2 + length:]
    with pytest.raises(AuthenticationFailed, match="fails authentication at chunk 0"):
        _read(tmp_path, downgraded, _old_record(sealing), keys.ring, None)


@pytest.mark.parametrize("length", [0, 1025, 65535])
def test_the_header_context_length_is_bounded(length):
    blob = _encrypt(Sealing(AES_MODE, key=KEY, key_id=aes_key_id(KEY)), b"x", BOUND)
    bad = blob[:HEADER.size] + length.to_bytes(2, "big") + blob[HEADER.size + 2:]
    with pytest.raises(AuthenticationFailed, match="binding length %d is not valid" % length):
        read_aes_header(io.BytesIO(bad))
    with pytest.raises(AuthenticationFailed, match="too short to hold its binding"):
        read_aes_header(io.BytesIO(blob[:HEADER.size + 10]))


def test_nothing_of_a_wrongly_bound_age_file_is_released(tmp_path, keys):
    sealing = keys.sealing(AGE_MODE)
    blob = _encrypt(sealing, b"secret rows" * 100, BOUND)
    path = tmp_path / "f.age"
    path.write_bytes(blob)
    with pytest.raises(AuthenticationFailed):
        open_decrypted(str(path), sealing.record(), keys.ring, "f", ID_A, Binding("prod", ID_B, "n"))
    with open_decrypted(str(path), sealing.record(), keys.ring, "f", ID_A, BOUND) as plain:
        assert plain.read(11) == b"secret rows"  # the prefix is stripped, the data starts at once


def test_a_bound_record_is_never_read_without_its_binding(tmp_path, keys):
    sealing = keys.sealing(AES_MODE)
    with pytest.raises(ValueError, match="read with its binding"):
        _read(tmp_path, _encrypt(sealing, b"x", BOUND), sealing.record(), keys.ring, None)
    with pytest.raises(ValueError, match="written with its binding"):
        sealing.writer(io.BytesIO().write, None)


def test_an_unknown_format_is_refused(tmp_path, keys):
    sealing = keys.sealing(AES_MODE)
    record = dict(sealing.record(), format="seawall-aes-256-gcm-chunked-v9")
    with pytest.raises(Exception, match="format 'seawall-aes-256-gcm-chunked-v9' is not known"):
        _read(tmp_path, _encrypt(sealing, b"x", BOUND), record, keys.ring, BOUND)


# ----------------------------------------------------------------------------- backups on disk

def _backup(directory: Path, backup_id: str, sealing: Sealing, repository: str = "prod",
            payloads=None) -> Backup:
    directory.mkdir(parents=True, exist_ok=True)
    payloads = payloads or {"database": os.urandom(2500), "globals": os.urandom(700)}
    files = []
    for role, data in payloads.items():
        name = "%s.%s%s" % (backup_id, "dump" if role == "database" else "globals.sql", sealing.suffix)
        with open(directory / name, "wb") as out:
            writer = StoredWriter(out, str(directory / name), "test", sealing, Binding(repository, backup_id, name))
            writer.write(data)
            writer.close()
        files.append({"name": name, "role": role, "size": writer.size, "sha256": writer.sha256,
                      "compression": "none"})
    document = {"format_version": 1, "id": backup_id, "type": "full", "created_at": "2026-11-26T02:00:00.000000Z",
                "files": files, "encryption": sealing.record(), "repository": repository}
    return Backup(document, str(directory / (backup_id + ".json")))


def _plain(backup: Backup, role: str, ring: Keyring) -> bytes:
    with open_stored(backup, backup.file(role), None, ring) as src:
        return src.read()


def _swap(source: Backup, source_role: str, target: Backup, target_role: str) -> None:
    """What an attacker with write access does: copy a file over another, and fix sha256 and size to match."""
    src_entry, dst_entry = source.file(source_role), target.file(target_role)
    shutil.copyfile(source.file_path(src_entry), target.file_path(dst_entry))
    blob = Path(target.file_path(dst_entry)).read_bytes()
    dst_entry.sha256, dst_entry.size = hashlib.sha256(blob).hexdigest(), len(blob)


@pytest.mark.parametrize("mode", MODES)
def test_open_stored_and_require_keys_bind_each_file_to_its_manifest(tmp_path, keys, mode):
    sealing = keys.sealing(mode)
    backup = _backup(tmp_path / "full", ID_A, sealing)
    assert binding_of(backup, backup.file("database")) == Binding("prod", ID_A, backup.file("database").name)
    assert len(_plain(backup, "database", keys.ring)) == 2500
    require_keys(backup, None, keys.ring)
    backup.manifest.repository = "staging"  # the same files named by a manifest of another repository
    with pytest.raises(AuthenticationFailed, match="moved or replayed"):
        _plain(backup, "database", keys.ring)
    with pytest.raises(VerifyError, match="moved or replayed"):
        require_keys(backup, None, keys.ring)


def test_a_manifest_without_repository_binds_to_default(tmp_path, keys):
    sealing = keys.sealing(AES_MODE)
    backup = _backup(tmp_path / "full", ID_A, sealing, repository="default")
    backup.manifest.repository = None
    assert len(_plain(backup, "globals", keys.ring)) == 700


def test_summary_flags_the_old_format(tmp_path, keys):
    sealing = keys.sealing(AES_MODE)
    backup = _backup(tmp_path / "full", ID_A, sealing)
    assert backup.summary()["legacy_format"] is False
    backup.manifest.encryption.format = "seawall-aes-256-gcm-chunked-v1"
    assert backup.summary()["legacy_format"] is True
    backup.manifest.encryption = None  # not encrypted: nothing to rekey
    assert backup.summary()["legacy_format"] is False


def test_list_marks_backups_in_the_old_format(tmp_path, monkeypatch, capsys):
    from seawall_pgbackup.cli import main as cli  # pylint: disable=import-outside-toplevel
    from seawall_pgbackup.ops import listing  # pylint: disable=import-outside-toplevel

    rows = [{"id": ID_A, "type": "full", "database": "app", "created_at": "2026-11-26T02:00:00Z", "size": 10,
             "good": True, "legacy_format": True},
            {"id": ID_B, "type": "full", "database": "app", "created_at": "2026-11-27T02:00:00Z", "size": 10,
             "good": True, "legacy_format": False}]
    monkeypatch.setattr(listing, "list_backups", lambda *args, **kwargs: rows)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    assert cli.main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines[ID_A].endswith(" [old encryption format: rekey]") and "old encryption" not in lines[ID_B]


# ----------------------------------------------------------------------------- properties

_BLOBS = {}


def _fixed_blob(keys: Keys, mode: str):
    """One encrypted file per mode (several aes chunks; two age STREAM chunks), made once."""
    if mode not in _BLOBS:
        data = os.urandom(70_000 if mode == AGE_MODE else 3_500)
        _BLOBS[mode] = (data, _encrypt(keys.sealing(mode), data, BOUND))
    return _BLOBS[mode]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(MODES), where=st.floats(min_value=0, max_value=1, exclude_max=True),
       delta=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_fails_or_changes_nothing(tmp_path, keys, mode, where, delta):
    data, blob = _fixed_blob(keys, mode)
    changed = bytearray(blob)
    changed[int(where * len(blob))] ^= delta
    try:
        got = _read(tmp_path, bytes(changed), keys.sealing(mode).record(), keys.ring, BOUND)
    except AuthenticationFailed:
        return
    assert got == data  # never other bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(MODES), source_role=st.sampled_from(["database", "globals"]),
       target_role=st.sampled_from(["database", "globals"]), older_into_newer=st.booleans(),
       same_role_name=st.booleans())
def test_any_swap_of_files_between_two_backups_fails(tmp_path_factory, keys, mode, source_role, target_role,
                                                     older_into_newer, same_role_name):
    root = tmp_path_factory.mktemp("swap")
    sealing = keys.sealing(mode)
    a = _backup(root / "full", ID_A, sealing)
    b = _backup(root / "full", ID_B, sealing)
    source, target = (a, b) if older_into_newer else (b, a)
    if same_role_name:
        target_role = source_role
    _swap(source, source_role, target, target_role)
    with pytest.raises(AuthenticationFailed, match="moved or replayed"):
        _plain(target, target_role, keys.ring)
    with pytest.raises(VerifyError):
        require_keys(target, None, keys.ring)
    # the other file of the target, and every file of the source, still read
    assert _plain(source, source_role, keys.ring)
    other = "globals" if target_role == "database" else "database"
    assert _plain(target, other, keys.ring)


@pytest.mark.parametrize("mode", MODES)
def test_a_swap_within_one_backup_fails(tmp_path, keys, mode):
    backup = _backup(tmp_path / "full", ID_A, keys.sealing(mode))
    _swap(backup, "globals", backup, "database")
    with pytest.raises(AuthenticationFailed, match="moved or replayed"):
        _plain(backup, "database", keys.ring)


def test_aes_reader_with_the_right_binding_checks_tags_too(keys):
    """A header edited to carry the expected binding passes the binding check but not the tags."""
    blob = _encrypt(keys.sealing(AES_MODE), os.urandom(2000), BOUND)
    other = Binding("prod", ID_B, ID_A + ".dump.gz.enc")
    forged = blob[:HEADER.size] + len(other.context()).to_bytes(2, "big") + other.context() \
        + blob[HEADER.size + 2 + len(BOUND.context()):]
    with pytest.raises(AuthenticationFailed, match="fails authentication at chunk 0"):
        io.BufferedReader(AesReader(io.BytesIO(forged), KEY, "f", other)).read()


# ----------------------------------------------------------------------------- rekey writes the bound format

def _old_backup(directory: Path, backup_id: str, sealing: Sealing) -> Backup:
    """A backup as the engine wrote it before the binding: v1 files, a v1 record, no repository."""
    directory.mkdir(parents=True, exist_ok=True)
    name = backup_id + ".dump" + sealing.suffix
    blob = _encrypt(sealing, b"PGDMP" + os.urandom(3000), None)
    (directory / name).write_bytes(blob)
    document = {"format_version": 1, "id": backup_id, "type": "full", "created_at": "2026-11-26T02:00:00.000000Z",
                "files": [{"name": name, "role": "database", "size": len(blob),
                           "sha256": hashlib.sha256(blob).hexdigest(), "compression": "none"}],
                "encryption": _old_record(sealing)}
    return Backup(document, str(directory / (backup_id + ".json")))


@pytest.mark.parametrize("mode", MODES)
def test_rekey_rewrites_an_old_format_backup_under_the_same_key(tmp_path, keys, mode):
    from seawall_pgbackup.ops import rekey  # pylint: disable=import-outside-toplevel
    from seawall_pgbackup.repo.catalog import Repository  # pylint: disable=import-outside-toplevel

    sealing = keys.sealing(mode)
    backup = _old_backup(tmp_path / "full", ID_A, sealing)
    before = _plain(backup, "database", keys.ring)
    assert backup.legacy_format and not rekey.same_key(backup.manifest.encryption, sealing)
    row = rekey.rekey_backup(Repository(str(tmp_path)), backup, keys.ring, sealing)
    assert row["changed"] is True and not backup.legacy_format
    entry = backup.file("database")
    assert entry.name != ID_A + ".dump" + sealing.suffix and is_bound(backup.manifest.encryption)
    assert _plain(backup, "database", keys.ring) == before  # bound to its new name, under the default repository
    assert rekey.same_key(backup.manifest.encryption, sealing)  # and a second rekey leaves it alone
    assert sorted(os.listdir(tmp_path / "full")) == sorted([entry.name, ID_A + ".json"])  # the old file is gone
