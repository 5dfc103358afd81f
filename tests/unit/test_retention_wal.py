"""cleanup prunes the WAL archive of a real backup directory (ops/cleanup.py over repo/walarchive.py): exactly the
files no kept base or incremental backup needs, records first; a dry run changes nothing; an unreadable physical
manifest or no kept base holds the whole archive."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup
from seawall_pgbackup.ops.cleanup import changed, cleanup, format_cleanup
from seawall_pgbackup.ops.incremental import lsn_text
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.repo.walarchive import DEFAULT_SEGMENT_SIZE, WalArchive, wal_name

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
SEG = DEFAULT_SEGMENT_SIZE


def _base(repo: Repository, moment: datetime, segno: int) -> Backup:
    backup_id = repo.new_id("base", "app", moment)
    name = backup_id + ".base.tar.gz"
    with open(os.path.join(repo.kind_dir("base"), name), "wb") as handle:
        handle.write(b"tar")
    manifest = {"format_version": FORMAT_VERSION, "id": backup_id, "type": "base", "status": "ok",
                "database": "app", "created_at": iso(moment), "finished_at": iso(moment), "method": "physical",
                "start_lsn": lsn_text(segno * SEG + 40), "stop_lsn": lsn_text(segno * SEG + 4096), "timeline": 1,
                "files": [{"name": name, "role": "base", "size": 3, "sha256": "x", "compression": "gzip"}]}
    backup = Backup(manifest, repo.manifest_path("base", backup_id))
    backup.save()
    return backup


def _archive(tmp_path, cfg, segnos) -> None:
    folder = tmp_path / "pg_wal"
    folder.mkdir(exist_ok=True)
    archive = WalArchive(cfg)
    for segno in segnos:
        path = folder / wal_name(1, segno)
        path.write_bytes(b"segment %d" % segno)
        archive.push(str(path))
    archive.close()


def _names(cfg):
    archive = WalArchive(cfg)
    try:
        return [s.wal for s in archive.segments()]
    finally:
        archive.close()


def _setup(tmp_path):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path / "backups")})
    repo = Repository(cfg.backup_dir)
    repo.prepare()
    _archive(tmp_path, cfg, range(1, 11))
    return cfg, repo


def test_cleanup_removes_exactly_the_wal_before_the_oldest_kept_base(tmp_path):
    cfg, repo = _setup(tmp_path)
    old = _base(repo, T0, 2)
    new = _base(repo, T0 + timedelta(days=1), 6)
    now = T0 + timedelta(days=1, hours=1)
    policies = {"base": {"keep_last": 1}}
    before = _names(cfg)
    plan = cleanup(cfg, dry_run=True, now=now, policies=policies)
    assert plan["to_delete"] == [old.id] and changed(plan)
    wal = plan["wal"]
    assert (wal["files"], wal["keep"], wal["delete"]) == (10, 5, 5) and wal["needed_by"] == [new.id]
    assert wal["ranges"] == ["timeline 1: %s..%s (5 files)" % (wal_name(1, 1), wal_name(1, 5))]
    assert wal["kept_from"] == {"1": wal_name(1, 6)} and wal["note"] is None
    assert _names(cfg) == before  # a dry run changes nothing
    text = "\n".join(format_cleanup(plan))
    assert "WAL archive: would remove 5 of 10 files, kept from timeline 1: %s" % wal_name(1, 6) in text

    done = cleanup(cfg, now=now, policies=policies)
    assert done["deleted"] == [old.id] and done["wal_removed"] == 5
    assert _names(cfg) == [wal_name(1, s) for s in range(6, 11)]
    left = sorted(os.listdir(os.path.join(cfg.backup_dir, "wal")))
    assert len(left) == 10 and all(n.startswith(tuple(wal_name(1, s) for s in range(6, 11))) for n in left)
    again = cleanup(cfg, now=now, policies=policies)
    assert again["wal_removed"] == 0 and again["wal"]["delete"] == 0 and not changed(again)


def test_an_unreadable_physical_manifest_or_no_kept_base_holds_the_archive(tmp_path):
    cfg, repo = _setup(tmp_path)
    plan = cleanup(cfg, dry_run=True, now=T0)
    assert plan["wal"]["delete"] == 0 and "the WAL archive is kept" in plan["wal"]["note"]
    _base(repo, T0, 2)
    _base(repo, T0 + timedelta(days=1), 6)
    with open(os.path.join(repo.kind_dir("base"), "base-app-20261119T020000Z.json"), "w", encoding="utf-8") as out:
        out.write("{not json")
    now = T0 + timedelta(days=1, hours=1)
    done = cleanup(cfg, now=now, policies={"base": {"keep_last": 1}})
    assert done["wal_removed"] == 0 and "cannot be read" in done["wal"]["note"]
    assert len(_names(cfg)) == 10
    assert "WAL archive: 10 files kept: a base or incremental manifest cannot be read" in "\n".join(
        format_cleanup(done))
