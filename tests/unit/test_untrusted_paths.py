"""Issue #11: the tool acts only on its own names, never through a symlink, never in another user's directory."""

from __future__ import annotations

import os
import stat
from datetime import timedelta

import pytest

from seawall_pgbackup.config.connection import DbTarget, remove_stale_passfiles, runtime_dir
from seawall_pgbackup.core.errors import ConfigError, DestinationError
from seawall_pgbackup.core.fsutil import check_private_dir, ensure_private_dir, write_file_atomic
from seawall_pgbackup.core.runlog import RunLog
from seawall_pgbackup.repo.catalog import Repository, is_our_file
from seawall_pgbackup.repo.lock import RepositoryLock
from seawall_pgbackup.store import LocalStore


@pytest.mark.parametrize("key, ours", [
    ("full/full-app-20261101T000000Z.dump.gz", True),
    ("full/full-my.db-20261101T000000Z-2.globals.sql.zst.age", True),
    ("full/full-app-20261101T000000Z.dump.gz.partial", True),
    ("full/.full-app-20261101T000000Z.json.123-abcd1234.tmp", True),
    ("schema/schema-app-20261101T000000Z.dump.rekey2.gz", True),
    ("full/schema-app-20261101T000000Z.dump", False),  # another kind's name in this folder
    ("full/notes.txt", False),
    ("full/full-app-20261101T000000Z.dump.txt", False),
    ("full/full-app-2026.dump", False),
    ("full/.full-app-20261101T000000Z.json", False),
])
def test_only_our_names_can_be_leftovers(key, ours):
    assert is_our_file(key) is ours


def test_existing_directories_are_checked_never_chmodded(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError, match="is writable by others \\(mode 0777\\)"):
        ensure_private_dir(str(shared))
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o777
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o770)
    with pytest.raises(ConfigError, match="writable by its group"):
        check_private_dir(str(group))
    readable = tmp_path / "readable"
    readable.mkdir()
    os.chmod(readable, 0o755)
    ensure_private_dir(str(readable))
    assert stat.S_IMODE(os.stat(readable).st_mode) == 0o755
    ensure_private_dir(str(tmp_path / "new" / "dir"))
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "dir").st_mode) == 0o700
    with pytest.raises(ConfigError, match="inside .*shared, which another user can change"):
        ensure_private_dir(str(shared / "inner"))


def test_a_symlinked_root_is_followed_a_symlinked_folder_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    repo = Repository(str(link))
    repo.prepare()  # the configured root may be a link its owner placed
    with repo.lock():
        pass
    assert sorted(os.listdir(real)) == sorted([".lock", "full", "incremental", "schema", "data", "globals", "base", "logs"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "full-app-20261101T000000Z.dump.gz").write_bytes(b"theirs")
    os.rmdir(real / "full")
    (real / "full").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="full is a symbolic link: refusing to follow it"):
        repo.prepare()
    with pytest.raises(ConfigError, match="symbolic link"):
        repo.backups()
    store = LocalStore("copy", str(real))
    with pytest.raises(DestinationError, match="symbolic link"):
        store.list("full/")
    with pytest.raises(DestinationError, match="symbolic link"):
        store.delete("full/full-app-20261101T000000Z.dump.gz")
    assert (elsewhere / "full-app-20261101T000000Z.dump.gz").read_bytes() == b"theirs"


def test_lock_log_and_temp_files_never_write_through_links(tmp_path):
    root = tmp_path / "repo"
    root.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (root / ".lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="cannot use lock file"):
        with RepositoryLock(str(root / ".lock")):
            pass
    os.unlink(root / ".lock")
    os.link(victim, root / ".lock")  # a hard link to another file: refused too
    with pytest.raises(ConfigError, match="cannot use lock file"):
        with RepositoryLock(str(root / ".lock")):
            pass
    os.unlink(root / ".lock")
    with RepositoryLock(str(root / ".lock")):
        pass
    (root / "backup.log").symlink_to(victim)
    RunLog(str(root)).info("event", a=1)
    RunLog(str(root)).failure("event", a=1)
    assert victim.read_bytes() == b"precious"
    assert "event" in (root / "backup-failures.log").read_text()
    (root / "manifest.json").symlink_to(victim)
    write_file_atomic(str(root / "manifest.json"), b"new")  # replaces the link, never its target
    assert victim.read_bytes() == b"precious" and (root / "manifest.json").read_bytes() == b"new"
    assert not os.path.islink(root / "manifest.json")


def test_stale_scratch_needs_our_name_a_dead_process_and_the_grace(tmp_path):
    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    root = tmp_path / "backups"
    dead = root / ".restore-999999999-abc"
    mine = root / (".restore-%d-abc" % os.getpid())
    for path in (dead, mine):
        path.mkdir()
    (root / ".restore-999999998-link").symlink_to(tmp_path)
    assert repo.stale_scratch(timedelta(hours=1)) == []  # too young
    assert repo.stale_scratch(timedelta(0)) == [str(dead)]
    assert repo.remove_stale_scratch(timedelta(0)) == [str(dead)]
    assert mine.exists() and tmp_path.exists()


def test_passfiles_go_to_a_private_runtime_directory_and_stale_ones_are_removed(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    stale = runtime / "pgpass-999999999-abcdef"
    stale.write_text("*:*:*:*:old\n")
    foreign = runtime / "not-ours"
    foreign.write_text("x")
    target = DbTarget("postgresql://app:pa%23ss%2Fw@db/app")
    path = target.env({})["PGPASSFILE"]
    try:
        assert os.path.dirname(path) == str(runtime)
        assert os.path.basename(path).startswith("pgpass-%d-" % os.getpid())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert not stale.exists() and foreign.exists()
        remove_stale_passfiles(str(runtime))
        assert os.path.exists(path)  # our own process is alive
    finally:
        target.close()
    assert not os.path.exists(path)
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o755)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(unsafe))
    chosen = runtime_dir()
    assert chosen != str(unsafe) and stat.S_IMODE(os.stat(chosen).st_mode) == 0o700


def test_a_manifest_copied_into_another_kinds_folder_is_reported_not_listed(tmp_path):
    import hashlib
    import shutil

    from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup

    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    backup_id = "full-app-20261101T000000Z"
    data = b"PGDMP"
    (tmp_path / "backups" / "full" / (backup_id + ".dump.gz")).write_bytes(data)
    manifest = {"format_version": FORMAT_VERSION, "id": backup_id, "type": "full", "status": "ok", "database": "app",
                "created_at": "2026-11-01T00:00:00.000000Z", "finished_at": "2026-11-01T00:00:01.000000Z",
                "files": [{"name": backup_id + ".dump.gz", "role": "database", "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "compression": "gzip"}]}
    Backup(manifest, repo.manifest_path("full", backup_id)).save()
    copy = tmp_path / "backups" / "schema" / (backup_id + ".json")
    shutil.copy(repo.manifest_path("full", backup_id), copy)
    assert [b.manifest_path for b in repo.backups(include_bad=True)] == [repo.manifest_path("full", backup_id)]
    assert repo.invalid_manifests() == [(str(copy), "a full backup's manifest in the schema folder (a copy?): "
                                         "not trusted")]


def test_a_planted_per_user_runtime_directory_is_never_used(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("seawall_pgbackup.config.connection._FALLBACK", [])
    planted = tmp_path / ("seawall-pgbackup-%d" % os.geteuid())
    planted.mkdir()
    os.chmod(planted, 0o777)  # someone else's doing
    chosen = runtime_dir()
    assert chosen != str(planted) and os.path.dirname(chosen) == str(tmp_path)
    assert stat.S_IMODE(os.stat(chosen).st_mode) == 0o700 and runtime_dir() == chosen
