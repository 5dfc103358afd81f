"""One catalog over one Store interface: the backup directory and a destination answer alike, and the
CLI's ``--destination`` commands go through that same ``Repository`` (there is no second catalog)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from seawall_pgbackup.cli.main import main
from seawall_pgbackup.config.destinations import parse_one
from seawall_pgbackup.core.clock import iso, utc_now
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup, Verification
from seawall_pgbackup.ops.sync import copy_backup
from seawall_pgbackup.repo import catalog
from seawall_pgbackup.repo.catalog import Repository, open_repository
from seawall_pgbackup.repo.retention import plan_retention
from seawall_pgbackup.store import LocalStore, Store

ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "pgbackup"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _make(repo: Repository, kind: str, moment: datetime, database: str = "app", status: str = "ok") -> Backup:
    backup_id = repo.new_id(kind, database, moment)
    data = ("%s rows" % backup_id).encode()
    name = backup_id + ".dump.gz"
    with open(os.path.join(repo.kind_dir(kind), name), "wb") as handle:
        handle.write(data)
    manifest = {"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": status,
                "database": database, "created_at": iso(moment), "finished_at": iso(moment),
                "files": [{"name": name, "role": "database", "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "compression": "gzip"}]}
    backup = Backup(manifest, repo.manifest_path(kind, backup_id))
    backup.save()
    return backup


@pytest.fixture(name="pair")
def _pair(tmp_path):
    """A backup directory with five backups, a leftover and a failed one; all copied to a second directory."""
    local = Repository(str(tmp_path / "backups"))
    local.prepare()
    made = [_make(local, "full", NOW - timedelta(days=d)) for d in (9, 5, 3, 1)]
    made.append(_make(local, "schema", NOW - timedelta(days=2)))
    made.append(_make(local, "full", NOW - timedelta(days=6), status="failed"))
    made.append(_make(local, "full", NOW - timedelta(days=4), database="other"))
    settings = parse_one("copy", {"type": "local", "path": str(tmp_path / "second-disk")})
    store = LocalStore("copy", str(tmp_path / "second-disk"))
    for backup in made:
        copy_backup(local, backup, store, settings)
    for root in (tmp_path / "backups", tmp_path / "second-disk"):
        leftover = root / "full" / "full-app-20261101T000000Z.dump.gz"
        leftover.write_bytes(b"interrupted")
        stamp = (NOW - timedelta(days=2)).timestamp()
        os.utime(leftover, (stamp, stamp))
    return local, Repository(store, destination="copy", scratch_root=str(tmp_path / "backups" / ".scratch"))


def test_the_same_answers_from_the_backup_directory_and_a_destination(pair):
    local, remote = pair
    assert isinstance(local.store, Store) and isinstance(remote.store, Store)

    def answers(repo: Repository):
        everything = repo.backups(include_bad=True)
        plan = plan_retention(everything, {"full": {"keep_last": 2}, "schema": {"keep_last": 1}}, NOW, "UTC",
                              {"full": "0 2 * * *", "schema": None})
        return {
            "list": [b.id for b in repo.backups()],
            "all": [(b.id, b.good) for b in everything],
            "full of app": [b.id for b in repo.backups(kind="full", database="app")],
            "latest": repo.find("latest").id,
            "latest schema": repo.find("latest", kind="schema").id,
            "latest of other": repo.find("latest", database="other").id,
            "before": repo.newest_before(NOW - timedelta(days=2)).id,
            "leftovers": [o.key for o in repo.leftover_objects(everything)],
            "plan": plan.as_dicts(),
        }

    here, there = answers(local), answers(remote)
    assert here == there
    assert len(here["list"]) == 6 and here["leftovers"] == ["full/full-app-20261101T000000Z.dump.gz"]
    assert here["plan"] and any(d["action"] != "keep" for d in here["plan"])
    # Locations differ only in how they are shown: a path here, a URI there.
    assert local.leftovers()[0].startswith(local.root)
    assert remote.leftovers()[0].startswith("file://")


def test_a_destination_lists_a_backup_with_a_missing_object_as_bad(pair, tmp_path):
    _local, remote = pair
    latest = remote.find("latest")
    remote.store.delete(remote.file_key(latest, latest.manifest.files[0]))
    assert latest.id not in [b.id for b in remote.backups()]
    with pytest.raises(Exception, match="marked bad"):
        remote.find(latest.id)


def test_cleanup_and_verification_records_go_through_the_store(pair):
    from seawall_pgbackup.config.settings import load_config
    from seawall_pgbackup.ops.cleanup import cleanup

    local, remote = pair
    cfg = load_config(env={"BACKUP_DIR": local.root})
    ids = [b.id for b in remote.backups(kind="full", database="app")]
    result = cleanup(cfg, now=NOW, policies={"full": {"keep_last": 1}}, leftover_grace="1s", repo=remote)
    assert result["destination"] == "copy" and set(ids[:-1]) <= set(result["deleted"])
    assert [b.id for b in remote.backups(kind="full", database="app")] == ids[-1:]
    assert [b.id for b in local.backups(kind="full", database="app")] == ids  # the backup directory is untouched
    assert remote.leftover_objects() == []
    # sync remembers the destination's retention: the local manifest records the removal.
    pruned = local.find(ids[0])
    assert [c.destination for c in pruned.manifest.copies] == ["copy"]
    kept = remote.find(ids[-1])
    kept.manifest.verification = Verification(level="checksum", at=utc_now(), ok=False, details="test")
    remote.save(kept)
    assert ids[-1] not in [b.id for b in remote.backups()]
    assert local.find(ids[-1]).good  # the record went to the destination's manifest only


def test_the_cli_destination_commands_use_the_one_catalog(pair, tmp_path, monkeypatch, capsys):
    """list/verify/cleanup/restore --destination: every one opens a Repository over the destination's store."""
    local, _remote = pair
    for name in list(os.environ):
        if name.startswith(("BACKUP_", "DATABASE_URL", "PG")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BACKUP_DIR", local.root)
    monkeypatch.setenv("BACKUP_LOCAL_PATH", str(tmp_path / "second-disk"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/app")
    opened = []
    real = catalog.open_repository

    def spy(cfg, destination=None):
        repo = real(cfg, destination)
        opened.append((destination, type(repo).__name__, repo.store.kind))
        return repo

    for module in ("seawall_pgbackup.cli.main", "seawall_pgbackup.ops.restore", "seawall_pgbackup.ops.listing",
                   "seawall_pgbackup.ops.cleanup"):
        monkeypatch.setattr(module + ".open_repository", spy)
    fetched = []
    real_copy = Repository.local_copy

    def copy_spy(self, backup):
        fetched.append((self.destination, backup.id))
        return real_copy(self, backup)

    monkeypatch.setattr(Repository, "local_copy", copy_spy)

    assert main(["list", "--destination", "local", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [b.id for b in local.backups()]
    assert {r["destination"] for r in rows} == {"local"} and rows[0]["manifest"].startswith("file://")
    assert main(["verify", "--destination", "local", "--level", "checksum", "--json"]) == 8  # the leftover: bad
    verified = json.loads(capsys.readouterr().out)
    assert [v["ok"] for v in verified if v["id"]] == [True] * 6
    assert [v["file"] for v in verified if not v["id"]] == [
        "file://" + str(tmp_path / "second-disk" / "full" / "full-app-20261101T000000Z.dump.gz")]
    assert main(["cleanup", "--destination", "local", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backup_dir"] == "file://" + str(tmp_path / "second-disk")
    assert main(["restore", "latest", "--destination", "local"]) != 0  # nothing listens: fails after the fetch
    latest = local.find("latest", database="app")
    assert fetched == [("local", latest.id)]
    # list opens it twice (its rows, then the manifests it skipped), verify, cleanup and restore once each
    # (cleanup opens the backup directory too: its lock and its log)
    assert [o[0] for o in opened if o[0]] == ["local"] * 5 and {o[1] for o in opened} == {"Repository"}
    assert not any((Path(local.root) / ".scratch").iterdir()), "the scratch copy was not removed"


def test_no_second_catalog():
    """Only repo/catalog.py reads manifests out of a store; ops/remote.py and RemoteCatalog are gone."""
    assert not (ENGINE / "ops" / "remote.py").exists()
    readers = set()
    for path in ENGINE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and "catalog" in node.name.lower():
                readers.add(node.name)
            called = getattr(node.func, "id", getattr(node.func, "attr", "")) if isinstance(node, ast.Call) else ""
            if called in ("parse_backup", "parse_backup_bytes", "backup_from_document", "decode_manifest"):
                readers.add(str(path.relative_to(ENGINE)))
    assert readers == {"repo/catalog.py", "model/manifest.py"}  # model: load_backup, a file's bytes
    # And the CLI opens destinations through the catalog only, never a store directly.
    cli_source = (ENGINE / "cli" / "main.py").read_text(encoding="utf-8")
    assert "open_destination" not in cli_source and "open_repository" in cli_source
    assert open_repository.__module__ == "seawall_pgbackup.repo.catalog"


def test_a_stream_reads_as_a_file_object_without_being_held_whole(tmp_path):
    """Store.open over read()'s chunks (what object stores give): partial reads, then the end."""
    store = LocalStore("copy", str(tmp_path))
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.put_bytes("full/x.dump", data)
    with Store.open(store, "full/x.dump") as stream:
        first = stream.read(1000)
        rest = stream.read()
        assert stream.read(10) == b""
    assert first + rest == data and len(first) == 1000
    assert store.sha256("full/x.dump") == (len(data), hashlib.sha256(data).hexdigest())
    assert not list(tmp_path.glob("full/*.partial"))
