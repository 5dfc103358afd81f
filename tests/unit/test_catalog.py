"""The catalog: manifests written last and atomically; incomplete backups never listed."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup, Verification
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.core.errors import LockedError, NotFound


def _make(repo: Repository, kind: str, moment: datetime, database: str = "app", status: str = "ok") -> Backup:
    backup_id = repo.new_id(kind, database, moment)
    name = backup_id + ".dump.gz"
    with open(os.path.join(repo.kind_dir(kind), name), "wb") as handle:
        handle.write(b"data")
    manifest = {"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": status,
                "database": database, "created_at": iso(moment), "finished_at": iso(moment),
                "files": [{"name": name, "role": "database", "size": 4, "sha256": "x", "compression": "gzip"}]}
    backup = Backup(manifest, repo.manifest_path(kind, backup_id))
    backup.save()
    return backup


@pytest.fixture(name="repo")
def _repo(tmp_path):
    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    return repo


T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def test_layout_and_modes(repo):
    for sub in ("full", "incremental", "schema", "data", "globals", "logs"):
        path = os.path.join(repo.root, sub)
        assert os.path.isdir(path) and os.stat(path).st_mode & 0o777 == 0o700
    backup = _make(repo, "full", T0)
    assert os.stat(backup.manifest_path).st_mode & 0o777 == 0o600


def test_listing_order_filters_and_latest(repo):
    old = _make(repo, "full", T0)
    new = _make(repo, "full", T0 + timedelta(days=1))
    _make(repo, "schema", T0 + timedelta(days=2))
    _make(repo, "full", T0 + timedelta(days=3), database="other")
    _make(repo, "full", T0 + timedelta(days=4), status="failed")
    assert [b.id for b in repo.backups(kind="full", database="app")] == [old.id, new.id]
    assert repo.find("latest", database="app").id == new.id
    assert repo.find(old.id).id == old.id
    assert repo.find(old.manifest_path).id == old.id
    assert repo.find(old.file_path(old.manifest.files[0])).id == old.id
    with pytest.raises(NotFound, match="no backup with id 'nope'"):
        repo.find("nope")


def test_same_second_gets_a_distinct_id(repo):
    first = _make(repo, "full", T0)
    second = _make(repo, "full", T0)
    assert first.id != second.id and second.id.endswith("-2")


def test_incomplete_backups_are_invisible_and_removed(repo):
    good = _make(repo, "full", T0)
    orphan = os.path.join(repo.kind_dir("full"), "full-app-20261121T020000Z.dump.gz")
    partial = os.path.join(repo.kind_dir("full"), "full-app-20261122T020000Z.dump.gz.partial")
    for path in (orphan, partial):
        with open(path, "wb") as handle:
            handle.write(b"PGDMP...")
    broken_manifest = os.path.join(repo.kind_dir("full"), "full-app-20261123T020000Z.json")
    with open(broken_manifest, "w", encoding="utf-8") as handle:
        handle.write('{"format_version": 1, "id": ')  # torn write of a foreign tool: never trusted
    assert [b.id for b in repo.backups()] == [good.id]
    with pytest.raises(NotFound, match="belongs to no complete backup"):
        repo.find(orphan)
    assert set(repo.leftovers()) == {orphan, partial}
    assert repo.remove_leftovers() == []  # younger than the grace period (6 h): kept
    assert os.path.exists(orphan) and os.path.exists(partial)
    repo.remove_leftovers(grace=timedelta(0))
    assert not os.path.exists(orphan) and not os.path.exists(partial)
    assert os.path.exists(good.file_path(good.manifest.files[0]))


def test_manifest_write_is_atomic(repo):
    backup = _make(repo, "full", T0)
    recorded = {"level": "checksum", "at": iso(T0), "ok": True}
    backup.manifest.verification = Verification.from_dict(recorded)
    backup.save()
    with open(backup.manifest_path, encoding="utf-8") as handle:
        assert json.load(handle)["verification"] == recorded
    assert not [n for n in os.listdir(repo.kind_dir("full")) if n.endswith(".tmp")]


def test_lock_allows_one_run(repo):
    with repo.lock():
        with pytest.raises(LockedError, match="another seawall-pgbackup run holds"):
            with repo.lock():
                pass
    with repo.lock():
        pass
