"""Retention of physical chains and of the WAL archive (issue #12): a base is kept while a kept incremental needs
it, an incremental while a kept later link does, the newest restorable chain always; the WAL archive keeps
exactly what the kept base and incremental backups need. Also the incremental method a server gets and the
bounded wait for the archive. Hypothesis properties over random histories of chains, bad links and timelines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seawall_pgbackup.config.settings import DEFAULT_RETENTION
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.core.errors import BackupError, ConfigError
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup
from seawall_pgbackup.ops.incremental import NATIVE, WAL, choose_method, lsn_text, lsn_value, wait_until_archived
from seawall_pgbackup.ops.listing import chain_of
from seawall_pgbackup.repo.retention import (WalFile, WalNeed, lsn_segno, plan_retention, plan_wal, wal_needed,
                                             wal_needs)

UTC = timezone.utc
SEG = 16 * 1024 * 1024
START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
POLICIES = {"base": DEFAULT_RETENTION["base"], "incremental": DEFAULT_RETENTION["incremental"]}
POLICY_CHOICES = [POLICIES, {"base": {"keep_last": 1}, "incremental": {"keep_last": 1}},
                  {"base": {"daily": 2}, "incremental": {"hourly": 3}}]


def wal_name(timeline: int, segno: int, seg_size: int = SEG) -> str:
    per = 0x100000000 // seg_size
    return "%08X%08X%08X" % (timeline, segno // per, segno % per)


def physical(kind: str, when: datetime, parent: Optional[str] = None, segno: int = 1, timeline: int = 1,
             status: str = "ok", failed: bool = False, method: Optional[str] = None) -> Backup:
    backup_id = "%s-app-%s" % (kind, when.strftime("%Y%m%dT%H%M%SZ"))
    manifest: Dict[str, Any] = {
        "format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "created_at": iso(when), "files": [],
        "status": status, "database": "app", "parent": parent, "method": method or "physical",
        "start_lsn": lsn_text(segno * SEG + 40), "stop_lsn": lsn_text(segno * SEG + 4096), "timeline": timeline,
    }
    if kind == "incremental":
        manifest["incremental"] = WAL if method == "wal" else NATIVE
    if failed:
        manifest["verification"] = {"level": "checksum", "at": iso(when), "ok": False, "details": "bad"}
    return Backup(manifest, "/nowhere/%s/%s.json" % (kind, backup_id))


# ----------------------------------------------------------------------------- the method a server gets

@pytest.mark.parametrize("major, settings_, method", [
    (18, {"summarize_wal": "on", "archive_mode": "on"}, NATIVE),
    (17, {"summarize_wal": "on", "archive_mode": "off"}, NATIVE),
    (18, {"summarize_wal": "off", "archive_mode": "on"}, WAL),
    (18, {"summarize_wal": "off", "archive_mode": "always"}, WAL),
    (15, {"archive_mode": "on"}, WAL),
    (16, {"archive_mode": "on", "summarize_wal": "on"}, WAL),  # no summarize_wal before 17: the setting is absent
])
def test_the_method_follows_the_server(major, settings_, method):
    chosen = choose_method(major, settings_)
    assert chosen.name == method and str(major) in chosen.why


@pytest.mark.parametrize("major, needs", [(18, "summarize_wal = on"), (15, "WAL archiving (archive_mode = on")])
def test_without_summaries_or_archiving_incremental_is_refused_in_one_line(major, needs):
    with pytest.raises(ConfigError) as err:
        choose_method(major, {"summarize_wal": "off", "archive_mode": "off"})
    assert needs in str(err.value) and "\n" not in str(err.value)


def test_lsn_text_round_trip():
    for text in ("0/0", "0/2000028", "1/0", "FFFFFFFF/FFFFFFFF", "A/B"):
        assert lsn_text(lsn_value(text)) == text
    assert lsn_segno("1/2000028", SEG) == (1 << 32 | 0x2000028) // SEG
    with pytest.raises(ValueError):
        lsn_value("12")


def test_the_wait_for_the_archive_is_bounded_and_says_what_is_missing():
    clock = [0.0]
    sleeps: List[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    answers = iter([(10, "A"), (20, "B"), (30, "")])
    assert wait_until_archived(lambda: next(answers), 25, 60, "x", lambda: clock[0], sleep) == 30
    assert len(sleeps) == 2
    clock[0] = 0.0
    with pytest.raises(BackupError) as err:
        wait_until_archived(lambda: (2 << 24, "000000010000000000000002"), 3 << 24, 5, "incremental-app-1",
                            lambda: clock[0], sleep)
    line = str(err.value)
    assert line.startswith("incremental-app-1: the WAL archive does not reach 0/3000000 after 5 s")
    assert "missing 000000010000000000000002" in line and "\n" not in line and clock[0] >= 5


# ----------------------------------------------------------------------------- chains

def test_a_base_is_kept_while_a_kept_incremental_needs_it_and_links_while_a_later_one_does():
    base = physical("base", START, segno=1)
    links = [physical("incremental", START + timedelta(days=20, hours=h), parent=None, segno=10 + h)
             for h in range(3)]
    chain = [base] + links
    for before, link in zip(chain, links):
        link.manifest.parent = before.id
    now = links[-1].created_at + timedelta(minutes=5)
    plan = plan_retention(chain, {"base": {"keep_last": 1}, "incremental": {"keep_last": 1}}, now)
    assert plan.delete == []
    assert "parent of %s" % links[1].id in plan.decision(links[0].id).reasons
    assert "parent of %s" % links[0].id in plan.decision(base.id).reasons


def test_the_newest_restorable_chain_is_kept_when_the_newest_links_are_broken():
    base = physical("base", START, segno=1)
    good = physical("incremental", START + timedelta(hours=1), parent=base.id, segno=2)
    bad = physical("incremental", START + timedelta(hours=2), parent=good.id, segno=3, failed=True)
    later = physical("incremental", START + timedelta(hours=3), parent=bad.id, segno=4)
    now = START + timedelta(hours=3, minutes=10)
    plan = plan_retention([base, good, bad, later], {"base": {"keep_last": 1}, "incremental": {"keep_last": 1}}, now)
    assert "newest restorable chain" in plan.decision(good.id).reasons
    assert set(plan.keep) == {base.id, good.id, bad.id, later.id}  # later's parents are kept too
    by_id = {b.id: b for b in (base, good, bad, later)}
    assert chain_of(later, by_id) == ([base.id, good.id, bad.id, later.id], "%s is not good" % bad.id)
    assert chain_of(good, by_id) == ([base.id, good.id], None)
    del by_id[good.id]
    assert chain_of(later, by_id) == ([good.id, bad.id, later.id], "%s is not good" % bad.id)


# ----------------------------------------------------------------------------- the WAL archive

def test_the_wal_plan_keeps_history_files_and_what_the_oldest_kept_base_needs():
    files = [WalFile(wal_name(1, s), 1, s) for s in range(1, 11)] + [
        WalFile("00000002.history", 2, None, "history"),
        WalFile(wal_name(2, 8), 2, 8), WalFile(wal_name(2, 9), 2, 9),
        WalFile(wal_name(1, 3) + ".00000028.backup", 1, None, "backup"),
        WalFile(wal_name(1, 6) + ".00000028.backup", 1, None, "backup"),
        WalFile(wal_name(1, 2) + ".partial", 1, 2, "partial")]
    plan = plan_wal(files, [WalNeed("base-b", 1, 5), WalNeed("incremental-c", 2, 9)], segment_size=SEG)
    deleted = sorted(f.wal for f in plan.delete)
    assert deleted == sorted([wal_name(1, s) for s in range(1, 5)]
                             + [wal_name(1, 3) + ".00000028.backup", wal_name(1, 2) + ".partial"])
    assert "00000002.history" in [f.wal for f in plan.keep] and wal_name(2, 8) in [f.wal for f in plan.keep]
    assert plan.ranges() == ["timeline 1: %s..%s (6 files)" % (wal_name(1, 1), wal_name(1, 4))]
    assert plan.kept_from() == {"1": wal_name(1, 5), "2": wal_name(2, 8)}
    assert plan.as_dict()["delete"] == 6 and plan.as_dict()["needed_by"] == ["base-b", "incremental-c"]


def test_without_a_kept_base_or_with_a_hold_no_wal_is_deleted():
    files = [WalFile(wal_name(1, s), 1, s) for s in range(1, 4)]
    assert plan_wal(files, []).delete == [] and "is kept" in plan_wal(files, []).note
    held = plan_wal(files, [WalNeed("b", 1, 3)], hold="unreadable manifest")
    assert held.delete == [] and held.note == "unreadable manifest"


def test_wal_needs_come_from_the_kept_physical_backups_and_a_missing_start_holds():
    base = physical("base", START, segno=7, timeline=2)
    link = physical("incremental", START + timedelta(hours=1), parent=base.id, segno=9, timeline=3, method="wal")
    link.manifest.extra["start_timeline"] = 2
    needs, hold = wal_needs([base, link], [base.id, link.id], SEG)
    assert hold is None and needs == [WalNeed(base.id, 2, 7), WalNeed(link.id, 2, 9)]
    assert wal_needs([base, link], [link.id], SEG)[0] == [WalNeed(link.id, 2, 9)]
    base.manifest.start_lsn = None
    assert "records no WAL start" in wal_needs([base], [base.id], SEG)[1]


# ----------------------------------------------------------------------------- properties

EVENTS = st.sampled_from(["none", "none", "base", "incr", "incr", "incr", "wal", "bad", "switch"])


@st.composite
def histories(draw) -> Tuple[List[Backup], List[WalFile], datetime, Dict[str, Dict[str, int]]]:
    """Hourly runs over up to 12 days: bases, native and WAL-method links (parent: the newest link), failed
    verifications, timeline switches, a few manifests lost; the archive holds every segment written, a few
    deleted by hand."""
    events = draw(st.lists(EVENTS, min_size=1, max_size=12 * 24))
    backups: List[Backup] = []
    timeline, segno, switches = 1, 1, {1: 1}
    newest: Optional[Backup] = None
    for hour, event in enumerate(events):
        when = START + timedelta(hours=hour, minutes=draw(st.integers(0, 50)))
        segno += draw(st.integers(0, 3))
        if event == "switch":
            timeline += 1
            switches[timeline] = segno
            continue
        if event == "none" or (event != "base" and newest is None):
            continue
        kind = "base" if event == "base" else "incremental"
        made = physical(kind, when, parent=newest.id if kind == "incremental" and newest else None, segno=segno,
                        timeline=timeline, failed=event == "bad", method="wal" if event == "wal" else None)
        if kind == "incremental" and newest is not None:
            made.manifest.extra["start_timeline"] = newest.manifest.timeline
            made.manifest.start_lsn = newest.manifest.stop_lsn
        backups.append(made)
        newest = made
        segno += 1
    files: List[WalFile] = [WalFile("%08X.history" % t, t, None, "history") for t in switches if t > 1]
    for tli, first in switches.items():
        last = switches.get(tli + 1, segno + 1)
        files.extend(WalFile(wal_name(tli, s), tli, s) for s in range(first, last + 1))
    lost = draw(st.sets(st.integers(0, max(0, len(backups) - 1)), max_size=2))  # manifests deleted by hand
    backups = [b for index, b in enumerate(backups) if index not in lost]
    gone = draw(st.sets(st.integers(0, max(0, len(files) - 1)), max_size=3))
    files = [f for index, f in enumerate(files) if index not in gone]
    now = (backups[-1].created_at if backups else START) + timedelta(minutes=draw(st.integers(1, 600)))
    return backups, files, now, draw(st.sampled_from(POLICY_CHOICES))


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _start(backup: Backup) -> Tuple[int, int]:
    manifest = backup.manifest
    return int(manifest.extra.get("start_timeline") or manifest.timeline), lsn_segno(manifest.start_lsn, SEG)


@PROPERTY_SETTINGS
@given(histories())
def test_property_kept_chains_are_whole_and_the_newest_restorable_one_is_kept(case):
    backups, _files, now, policies = case
    plan = plan_retention(backups, policies, now)
    keep = set(plan.keep)
    by_id = {b.id: b for b in backups}
    for backup in backups:  # a kept link's parents are kept, all the way to its base
        if backup.id in keep and backup.manifest.parent in by_id:
            assert backup.manifest.parent in keep, (backup.id, plan.decision(backup.manifest.parent).reasons)
    restorable = [b for b in backups if chain_of(b, by_id)[1] is None]
    if restorable:
        assert restorable[-1].id in keep  # never the last chain that restores
    if backups:
        for kind in ("base", "incremental"):
            good = [b for b in backups if b.kind == kind and b.good]
            if good:
                assert good[-1].id in keep


@PROPERTY_SETTINGS
@given(histories())
def test_property_the_wal_archive_keeps_exactly_what_kept_backups_need(case):
    backups, files, now, policies = case
    plan = plan_retention(backups, policies, now)
    needs, hold = wal_needs(backups, plan.keep, SEG)
    assert hold is None
    wal = plan_wal(files, needs, segment_size=SEG)
    assert sorted(f.wal for f in wal.keep + wal.delete) == sorted(f.wal for f in files)
    kept = {f.wal for f in wal.keep}
    starts = [_start(b) for b in backups if b.id in set(plan.keep)]
    for item in files:
        needed = item.kind == "history" or any(t <= item.timeline and s <= item.segno for t, s in starts)
        assert (item.wal in kept) == (needed or not starts), item
    for backup in backups:  # every kept backup replays from its own start, on its timeline and the later ones
        if backup.id in set(plan.keep):
            tli, first = _start(backup)
            assert all(f.wal in kept for f in files if f.timeline >= tli and f.segno is not None and f.segno >= first)


def test_wal_needed_is_per_timeline():
    needs = [WalNeed("b", 2, 10)]
    assert not wal_needed(WalFile(wal_name(1, 12), 1, 12), needs)  # an older timeline's segment: abandoned
    assert wal_needed(WalFile(wal_name(3, 12), 3, 12), needs)
    assert not wal_needed(WalFile(wal_name(2, 9), 2, 9), needs)
    assert wal_needed(WalFile("00000001.history", 1, None, "history"), needs)
