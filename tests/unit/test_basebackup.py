"""pg/basebackup: the tar scanner that finds backup_manifest in pg_basebackup's stream, the backup_manifest's WAL
range, the tar sanity check, and the extraction of an untrusted tar (hostile members refused)."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from seawall_pgbackup.core.errors import BackupError, RestoreError, VerifyError
from seawall_pgbackup.model.manifest import Manifest, ManifestError
from seawall_pgbackup.pg.basebackup import (TarScanner, check_base_tar, extract_tar, parse_backup_manifest,
                                            parse_lsn)

MANIFEST = {"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]}


def _tar(members) -> bytes:
    """members: (TarInfo fields, data or None)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for fields, data in members:
            fields = dict(fields)
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _base_tar(manifest: bytes = json.dumps(MANIFEST).encode()) -> bytes:
    return _tar([({"name": "PG_VERSION"}, b"18\n"), ({"name": "global", "type": tarfile.DIRTYPE}, None),
                 ({"name": "global/pg_control"}, os.urandom(8192 + 17)),
                 ({"name": "pg_wal/000000010000000000000002"}, b"w" * 5000),
                 ({"name": "backup_manifest"}, manifest)])


@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 4096, 1 << 20])
def test_the_scanner_keeps_backup_manifest_whatever_the_chunking(chunk):
    data = _base_tar()
    scanner = TarScanner()
    for start in range(0, len(data), chunk):
        scanner.feed(data[start:start + chunk])
    assert scanner.kept == json.dumps(MANIFEST).encode() and scanner.ended and scanner.members == 5


def test_the_scanner_ignores_a_nested_or_linked_backup_manifest():
    data = _tar([({"name": "base/backup_manifest"}, b"{}"),
                 ({"name": "backup_manifest", "type": tarfile.SYMTYPE, "linkname": "x"}, None)])
    scanner = TarScanner()
    scanner.feed(data)
    assert scanner.kept is None and scanner.members == 2


def test_the_wal_range_comes_from_the_backup_manifest():
    wal = parse_backup_manifest(json.dumps(MANIFEST).encode())
    assert (wal.start_lsn, wal.stop_lsn, wal.timeline) == ("0/2000028", "0/2000100", 1)
    two = dict(MANIFEST, **{"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000"},
                                           {"Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "1/A0"}]})
    wal = parse_backup_manifest(json.dumps(two).encode())
    assert (wal.start_lsn, wal.stop_lsn, wal.timeline) == ("0/2000028", "1/A0", 2)
    assert parse_lsn("1/A0") == (1 << 32) + 0xA0


@pytest.mark.parametrize("data, why", [
    (None, "no backup_manifest"),
    (b"not json", "cannot be read"),
    (json.dumps({"Files": []}).encode(), "WAL-Ranges"),
    (json.dumps(dict(MANIFEST, **{"WAL-Ranges": []})).encode(), "empty"),
    (json.dumps(dict(MANIFEST, **{"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/3", "End-LSN": "0/2"}]})).encode(),
     "before"),
    (json.dumps(dict(MANIFEST, **{"WAL-Ranges": [{"Timeline": 0, "Start-LSN": "0/2", "End-LSN": "0/3"}]})).encode(),
     "not a timeline"),
    (json.dumps(dict(MANIFEST, **{"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "zz", "End-LSN": "0/3"}]})).encode(),
     "not an LSN"),
])
def test_a_bad_backup_manifest_is_one_line(data, why):
    with pytest.raises(BackupError) as err:
        parse_backup_manifest(data)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_the_tar_sanity_check():
    data = _base_tar()
    assert check_base_tar(data[:4096], data[-4096:], len(data)) is None
    assert "empty" in check_base_tar(b"", b"", 0)
    assert "not a tar" in check_base_tar(b"x" * 4096, data[-4096:], 4096)
    cut = data[:3000]  # ends inside a member
    assert "truncated" in check_base_tar(cut[:4096], cut[-4096:], len(cut))


def test_the_manifest_model_checks_the_lsn_fields():
    base = {"format_version": 1, "id": "base-db-20260101T000000Z", "type": "base", "created_at":
            "2026-01-01T00:00:00.000000Z", "files": []}
    manifest = Manifest.from_dict(dict(base, start_lsn="0/2000028", stop_lsn="0/2000100", timeline=1))
    assert manifest.to_dict()["stop_lsn"] == "0/2000100"
    assert "start_lsn" not in Manifest(id=base["id"], kind="base", created_at=manifest.created_at, files=[]).to_dict()
    for bad in ({"start_lsn": "0/2; rm"}, {"stop_lsn": "x"}, {"timeline": 0}, {"timeline": "1"}):
        with pytest.raises(ManifestError):
            Manifest.from_dict(dict(base, **bad))


def test_a_base_tar_extracts_with_private_modes(tmp_path):
    files, size = extract_tar(io.BytesIO(_base_tar()), str(tmp_path), "t")
    assert files == 4 and size > 8192
    assert (tmp_path / "PG_VERSION").read_bytes() == b"18\n"
    assert os.stat(tmp_path / "global" / "pg_control").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "pg_wal").st_mode & 0o777 == 0o700


@pytest.mark.parametrize("member, why", [
    ({"name": "/etc/evil"}, "absolute"),
    ({"name": "../evil"}, "'..'"),
    ({"name": "global/../../evil"}, "'..'"),
    ({"name": "link", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "links"),
    ({"name": "hard", "type": tarfile.LNKTYPE, "linkname": "PG_VERSION"}, "links"),
    ({"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "devices"),
    ({"name": "fifo", "type": tarfile.FIFOTYPE}, "fifos"),
    ({"name": "PG_VERSION"}, "twice"),
])
@pytest.mark.parametrize("error", [VerifyError, RestoreError])
def test_hostile_members_are_refused(tmp_path, member, why, error):
    dest = tmp_path / "data"
    dest.mkdir()
    data = None if member.get("type") not in (None, tarfile.REGTYPE) else b"evil\n"
    archive = _tar([({"name": "PG_VERSION"}, b"18\n"), (member, data)])
    with pytest.raises(error) as err:
        extract_tar(io.BytesIO(archive), str(dest), "backup X file Y", error)
    assert why in str(err.value) and "backup X file Y" in str(err.value)
    assert not (tmp_path / "evil").exists() and not os.path.lexists(dest / "link")
    assert sorted(os.listdir(dest)) == ["PG_VERSION"] and (dest / "PG_VERSION").read_bytes() == b"18\n"


def test_a_truncated_tar_is_an_error(tmp_path):
    data = _base_tar()
    with pytest.raises(VerifyError):
        extract_tar(io.BytesIO(data[:700]), str(tmp_path), "t")
