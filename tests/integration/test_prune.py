"""Retention on a real directory: 400 backups over two years keep exactly the policy's set.

No database is needed: the backups are small real files with real manifests (``Backup.save``). The
expected set is computed here again, independently and as plainly as possible, from the manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set
from zoneinfo import ZoneInfo

import pytest

from seawall_pgbackup.ops import cleanup as prune
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup, Verification
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.core.clock import iso, parse_iso, utc_now
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import BackupError, LockedError

REPO_ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
NOW = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
ZONE = "Europe/Berlin"
SCHEMA_POLICY = {"weekly": 8, "keep_last": 3}


def write_backup(repo: Repository, kind: str, moment: datetime, rng: random.Random, database: str = "vtt",
                 verification: Optional[Dict[str, Any]] = None, parent: Optional[str] = None) -> Backup:
    """A backup as the engine writes one: data file(s) first, then the manifest (atomically)."""
    backup_id = repo.new_id(kind, database, moment)
    files = []
    roles = ("database", "globals") if kind == "full" else ("database",)
    for role in roles:
        name = "%s.%s" % (backup_id, "dump.gz" if role == "database" else "globals.sql.gz")
        data = rng.randbytes(rng.randint(16, 256))
        with open(os.path.join(repo.kind_dir(kind), name), "wb") as handle:
            handle.write(data)
        files.append({"name": name, "role": role, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "compression": "gzip"})
    manifest = {"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": "ok", "database": database,
                "created_at": iso(moment), "finished_at": iso(moment + timedelta(seconds=30)), "files": files,
                "parent": parent, "verification": verification}
    backup = Backup(manifest, repo.manifest_path(kind, backup_id))
    backup.save()
    return backup


def verification(ok: bool) -> Dict[str, Any]:
    return {"level": "checksum", "at": iso(NOW), "ok": ok, "details": "ok" if ok else "sha256 mismatch",
            "duration_seconds": 0.1}


def build_two_years(root: Path) -> Repository:
    """400 backups spread over two years (seeded): 280 full (some verified, some failed), 20 incremental
    (a chain), 90 schema, 10 data."""
    rng = random.Random(20261126)
    repo = Repository(str(root))
    repo.prepare()
    two_years = 730 * 24 * 60
    # the newest full 3 h ago (daily schedule); in the last 30 days two a day, at 22:30 and 23:30 UTC, on either
    # side of Berlin's midnight (23:00 UTC in winter); before that, 218 in a 4-hour window around 23:00 UTC
    late_evening = NOW.replace(hour=23, minute=0)
    full_times = [NOW - timedelta(hours=3)]
    full_times += [late_evening - timedelta(days=day, minutes=offset) for day in range(1, 31) for offset in (-30, 30)]
    full_times += [late_evening - timedelta(days=k // 240 + 31) + timedelta(minutes=k % 240 - 120)
                   for k in rng.sample(range(0, 698 * 240), 218)]
    for index, moment in enumerate(full_times):
        check = None
        if index and rng.random() < 0.08:
            check = verification(False)
        elif rng.random() < 0.15:
            check = verification(True)
        write_backup(repo, "full", moment, rng, verification=check)
    # an incremental chain on a full of 45 days ago (which only the chain keeps), one every ~12 h,
    # the newest 1 h ago (hourly schedule)
    parent = write_backup(repo, "full", NOW - timedelta(days=45, minutes=17), rng).id
    for step in range(20, 0, -1):
        moment = NOW - timedelta(minutes=60 + (step - 1) * 12 * 60 + rng.randint(0, 30))
        parent = write_backup(repo, "incremental", moment, rng, parent=parent).id
    for minutes in [24 * 60] + rng.sample(range(24 * 60 + 1, two_years), 89):  # weekly schedule: newest 1 day ago
        write_backup(repo, "schema", NOW - timedelta(minutes=minutes), rng,
                     verification=verification(True) if rng.random() < 0.2 else None)
    for minutes in rng.sample(range(60, two_years), 10):
        write_backup(repo, "data", NOW - timedelta(minutes=minutes), rng)
    return repo


def manifests(root: Path) -> List[Dict[str, Any]]:
    found = []
    for path in root.glob("*/*.json"):
        with open(path, encoding="utf-8") as handle:
            found.append(json.load(handle))
    return found


def expected_kept(documents: List[Dict[str, Any]], policies: Dict[str, Dict[str, int]], zone: str) -> Set[str]:
    """The policy's set, restated plainly: per group, the newest good backup; for each slot kind, the N latest
    periods holding good backups, each keeping its newest verified backup or else its newest; the N newest good;
    then every parent of a kept backup. (This catalog has no failed newest backup and no stopped schedule.)"""
    tz = ZoneInfo(zone)
    labels = {
        "hourly": lambda t: t.strftime("%Y-%m-%dT%H"),
        "daily": lambda t: t.strftime("%Y-%m-%d"),
        "weekly": lambda t: "%d-W%02d" % t.isocalendar()[:2],
        "monthly": lambda t: t.strftime("%Y-%m"),
        "yearly": lambda t: t.strftime("%Y"),
    }

    def created(doc):
        return parse_iso(doc["created_at"])

    def good(doc):
        return doc["status"] == "ok" and (doc.get("verification") or {}).get("ok") is not False

    def verified(doc):
        return (doc.get("verification") or {}).get("ok") is True

    keep: Set[str] = set()
    groups = defaultdict(list)
    for doc in documents:
        groups[(doc["type"], doc["database"])].append(doc)
    for (kind, _database), docs in groups.items():
        policy = {k: v for k, v in policies.get(kind, {}).items() if v}
        if not policy:
            keep.update(doc["id"] for doc in docs)
            continue
        goods = [doc for doc in docs if good(doc)]
        assert good(max(docs, key=created)), "this test's catalog has a good newest backup in every group"
        keep.add(max(goods, key=created)["id"])
        for granularity, label in labels.items():
            periods = defaultdict(list)
            for doc in goods:
                periods[label(created(doc).astimezone(tz))].append(doc)
            for period in sorted(periods, reverse=True)[:policy.get(granularity, 0)]:
                members = periods[period]
                keep.add(max([d for d in members if verified(d)] or members, key=created)["id"])
        keep.update(doc["id"] for doc in sorted(goods, key=created, reverse=True)[:policy.get("keep_last", 0)])
    by_id = {doc["id"]: doc for doc in documents}
    grew = True
    while grew:
        grew = False
        for backup_id in list(keep):
            parent = by_id[backup_id].get("parent")
            if parent in by_id and parent not in keep:
                keep.add(parent)
                grew = True
    return keep


def snapshot(root: Path) -> Dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file() and p.parent.name != "logs"}


@pytest.fixture(name="two_years")
def _two_years(tmp_path):
    root = tmp_path / "backups"
    repo = build_two_years(root)
    config_file = tmp_path / "seawall.json"
    config_file.write_text(json.dumps({"backup": {"types": {"schema": {"retention": SCHEMA_POLICY}}}}))
    cfg = load_config(env={"BACKUP_DIR": str(root), "BACKUP_TIMEZONE": ZONE, "BACKUP_CONFIG": str(config_file)})
    # leftovers of interrupted runs: one old, one fresh (the grace period is 6 h)
    old = root / "full" / "full-vtt-20261125T200000Z.dump.gz"
    old_partial = root / "schema" / "schema-vtt-20261120T030000Z.dump.gz.partial"
    fresh = root / "full" / "full-vtt-20261126T040000Z.dump.gz.partial"
    for path, age in ((old, timedelta(hours=7)), (old_partial, timedelta(days=6)), (fresh, timedelta(hours=1))):
        path.write_bytes(b"PGDMP")
        stamp = (NOW - age).timestamp()
        os.utime(path, (stamp, stamp))
    return repo, cfg, {"old": [str(old), str(old_partial)], "fresh": [str(fresh)]}


def test_four_hundred_backups_over_two_years_keep_exactly_the_policys_set(two_years):
    repo, cfg, leftovers = two_years
    root = Path(repo.root)
    documents = manifests(root)
    assert len(documents) == 400
    assert {d["type"] for d in documents} == {"full", "incremental", "schema", "data"}
    policies = {"full": {"daily": 7, "weekly": 4, "monthly": 12}, "incremental": {"hourly": 24, "daily": 7},
                "schema": SCHEMA_POLICY, "data": {}, "globals": {"daily": 7, "weekly": 4, "monthly": 12},
                "base": {"daily": 7, "weekly": 4}}
    expected = expected_kept(documents, policies, ZONE)
    assert 40 < len(expected) < 100, len(expected)  # a real selection, not "everything" or "nearly nothing"
    assert expected != expected_kept(documents, policies, "UTC")  # Berlin's days are not UTC's here
    failed = {d["id"] for d in documents if (d.get("verification") or {}).get("ok") is False}
    assert failed and not failed & expected

    # --dry-run: the plan, and nothing changed on disk
    before = snapshot(root)
    dry = prune.cleanup(cfg, dry_run=True, now=NOW)
    assert snapshot(root) == before
    assert dry["dry_run"] and dry["deleted"] == [] and dry["leftovers_removed"] == []
    assert set(dry["kept"]) == expected
    assert sorted(dry["leftovers_to_remove"]) == sorted(leftovers["old"])
    assert dry["leftovers_kept"] == leftovers["fresh"]
    assert dry["policies"] == policies and dry["timezone"] == ZONE
    assert not os.path.exists(os.path.join(repo.log_dir, "backup.log"))

    result = prune.cleanup(cfg, dry_run=False, now=NOW)
    assert set(result["kept"]) == expected
    assert set(result["deleted"]) == {d["id"] for d in documents} - expected
    assert {b.id for b in repo.backups(include_bad=True)} == expected
    assert sorted(result["leftovers_removed"]) == sorted(leftovers["old"])
    assert result["leftovers_kept"] == leftovers["fresh"]
    # every file on disk belongs to a kept backup (or is the fresh leftover); every kept backup is whole
    on_disk = {str(p) for p in root.glob("*/*") if p.is_file() and p.parent.name != "logs"}
    wanted = set(leftovers["fresh"])
    for backup in repo.backups(include_bad=True):
        wanted.add(backup.manifest_path)
        wanted.update(backup.file_path(entry) for entry in backup.manifest.files)
    assert on_disk == wanted
    assert repo.leftovers() == leftovers["fresh"]
    # reasons: every deletion is explained, every decision has one
    plan = {d["id"]: d for d in result["plan"]}
    assert all(plan[i]["reasons"] in (["expired"], ["failed verification"]) for i in result["deleted"])
    assert all(plan[i]["reasons"] for i in result["kept"])
    chain = [d for d in documents if d["type"] == "incremental"]
    base = {d["parent"] for d in chain} - {d["id"] for d in chain}
    assert len(base) == 1
    assert re.fullmatch(r"parent of incremental-vtt-\S+", " ".join(plan[base.pop()]["reasons"]))
    # one log line per deletion
    with open(os.path.join(repo.log_dir, "backup.log"), encoding="utf-8") as handle:
        log = handle.read().splitlines()
    pruned = [line for line in log if " INFO deleted " in line]
    assert len(pruned) == len(result["deleted"])
    assert re.search(r"id=full-vtt-\S+ type=full database=vtt created_at=\S+ reasons=expired", "\n".join(pruned))

    again = prune.cleanup(cfg, dry_run=False, now=NOW)
    assert again["deleted"] == [] and again["to_delete"] == [] and again["leftovers_removed"] == []
    assert set(again["kept"]) == expected
    assert prune.format_cleanup(again)[-2:] == [
        "deleted 0 backups, removed 0 leftovers",
        "left leftover %s (younger than 21600s, or beside an unreadable manifest)" % leftovers["fresh"][0]]


def test_a_later_run_still_keeps_the_policys_set(two_years):
    """A week later (with the backups of that week), the plan is again exactly the restated policy."""
    repo, cfg, _leftovers = two_years
    prune.cleanup(cfg, now=NOW)
    rng = random.Random(7)
    later = NOW + timedelta(days=7)
    for day in range(7, 0, -1):
        write_backup(repo, "full", later - timedelta(days=day - 1, hours=3), rng)
    write_backup(repo, "schema", later - timedelta(hours=20), rng)
    write_backup(repo, "incremental", later - timedelta(minutes=30), rng, parent=None)
    documents = manifests(Path(repo.root))
    policies = prune.policies_of(cfg)
    result = prune.cleanup(cfg, now=later)
    assert set(result["kept"]) == expected_kept(documents, policies, ZONE)
    assert result["deleted"]


def test_held_groups_and_the_lock(two_years):
    repo, cfg, _leftovers = two_years
    newest_full = repo.backups(kind="full")[-1]
    newest_full.manifest.verification = Verification.from_dict(verification(False))
    newest_full.save()
    with repo.lock():
        with pytest.raises(LockedError, match="another seawall-pgbackup run holds"):
            prune.cleanup(cfg, now=NOW, wait_seconds=0)
        dry = prune.cleanup(cfg, dry_run=True, now=NOW)  # a dry run takes no lock
    held = [d for d in dry["plan"] if d["type"] == "full"]
    assert all(d["action"] == "keep" for d in held)
    assert all(d["reasons"][0] == "newest full is not good: nothing of this kind is deleted" for d in held)
    assert dry["notes"]["full/vtt"] == "newest full is not good: nothing of this kind is deleted"
    assert any(d["action"] == "delete" for d in dry["plan"] if d["type"] == "schema")
    # the full backups stopped two days ago: still nothing of them is deleted
    newest_full.manifest.verification = Verification.from_dict(verification(True))
    newest_full.save()
    result = prune.cleanup(cfg, now=NOW + timedelta(days=2))
    assert not [i for i in result["deleted"] if i.startswith("full-")]
    assert "backups stopped" in result["notes"]["full/vtt"]
    with open(os.path.join(repo.log_dir, "backup.log"), encoding="utf-8") as handle:
        assert "WARNING retention-held group=full/vtt" in handle.read()


def test_manifest_goes_first_so_a_failed_delete_leaves_only_a_leftover(tmp_path, monkeypatch):
    rng = random.Random(1)
    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    old = write_backup(repo, "schema", NOW - timedelta(days=30), rng)
    write_backup(repo, "schema", NOW - timedelta(hours=2), rng)
    cfg = load_config(env={"BACKUP_DIR": repo.root})
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if str(path).endswith(".dump.gz"):
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(BackupError, match=r"deleted the manifest of %s but not its file .*Permission denied" % old.id):
        prune.cleanup(cfg, now=NOW, policies={"schema": {"keep_last": 1}})
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert old.id not in {b.id for b in repo.backups(include_bad=True)}
    assert repo.leftovers() == [old.file_path(old.manifest.files[0])]
    with open(os.path.join(repo.log_dir, "backup-failures.log"), encoding="utf-8") as handle:
        assert "cleanup-failed step=cleanup" in handle.read()


def test_a_file_beside_an_unreadable_manifest_is_never_removed(tmp_path):
    """A manifest this version cannot read (a newer format) keeps its data files, however old."""
    rng = random.Random(2)
    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    write_backup(repo, "full", NOW - timedelta(hours=3), rng)
    future = write_backup(repo, "full", NOW - timedelta(days=3), rng)
    future.manifest.format_version = FORMAT_VERSION + 1
    future.save()
    stamp = (NOW - timedelta(days=3)).timestamp()
    data = [future.file_path(entry) for entry in future.manifest.files]
    for path in data:
        os.utime(path, (stamp, stamp))
    result = prune.cleanup(load_config(env={"BACKUP_DIR": repo.root}), now=NOW)
    # Not leftovers at all: the catalog leaves them to their manifest, for cleanup and backup runs alike.
    assert result["leftovers_removed"] == [] and result["leftovers_kept"] == []
    assert repo.remove_leftovers() == []
    assert all(os.path.exists(path) for path in data)


def test_a_missing_backup_dir_is_an_empty_plan(tmp_path):
    result = prune.cleanup(load_config(env={"BACKUP_DIR": str(tmp_path / "nothing")}), now=NOW)
    assert result["plan"] == [] and result["deleted"] == [] and not (tmp_path / "nothing").exists()


# ----------------------------------------------------------------------------- through ansible-playbook

def _playbook(args: List[str], backup_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "ANSIBLE_"))}
    env.update(ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), BACKUP_DIR=str(backup_dir), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), "playbooks/cleanup.yml",
               "-e", "pgbackup_leftover_grace=6h"] + args
    proc = subprocess.run(command, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _recap_changed(proc: subprocess.CompletedProcess) -> int:
    match = re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", proc.stdout)
    assert match, proc.stdout
    return int(match.group(1))


def test_cleanup_playbook_check_mode_then_real_then_idempotent(tmp_path):
    if not Path(sys.executable).with_name("ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed beside this Python")
    rng = random.Random(3)
    root = tmp_path / "backups"
    repo = Repository(str(root))
    repo.prepare()
    now = utc_now()
    for day in range(30):
        write_backup(repo, "full", now - timedelta(days=day, hours=1), rng)
    orphan = root / "full" / "full-vtt-20200101T000000Z.dump.gz"
    orphan.write_bytes(b"PGDMP")
    os.utime(orphan, (0, 0))
    before = snapshot(root)
    expected = expected_kept(manifests(root), {"full": {"daily": 7, "weekly": 4, "monthly": 12}}, "UTC")

    check = _playbook(["--check", "--diff"], root)
    assert _recap_changed(check) == 1
    assert snapshot(root) == before
    assert "would delete full-vtt-" in check.stdout and "would remove leftover %s" % orphan in check.stdout
    assert "-    - full-vtt-" in check.stdout  # the diff: ids present before, kept after

    real = _playbook([], root)
    assert _recap_changed(real) == 1
    kept = {b.id for b in repo.backups()}
    assert kept == expected and 9 <= len(kept) <= 13  # 7 days, 2 or 3 more weeks, 0 to 2 more months
    assert not orphan.exists()
    assert "kept %d, deleted %d of 30 backups" % (len(kept), 30 - len(kept)) in real.stdout

    again = _playbook([], root)
    assert _recap_changed(again) == 0
    assert {b.id for b in repo.backups()} == kept
    assert "kept %d, deleted 0 of %d backups" % (len(kept), len(kept)) in again.stdout
