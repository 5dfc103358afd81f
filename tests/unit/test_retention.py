"""The retention planner: every reason, time-zone slot boundaries, the rules that protect data, and
hypothesis properties over random catalogs."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seawall_pgbackup.config.settings import DEFAULT_RETENTION, load_config
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup
from seawall_pgbackup.ops.cleanup import parse_duration, policies_of
from seawall_pgbackup.repo.retention import (POLICY_KEYS, SLOT_GRANULARITIES, BackupRecord, format_plan,
                                             normalize_policy, period_label, plan_retention, record_of, time_zone)

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def rec(backup_id: str, when: datetime, kind: str = "full", database: str = "app", good: bool = True,
        verified: bool = False, failed: bool = False, parent: Optional[str] = None) -> BackupRecord:
    return BackupRecord(id=backup_id, type=kind, database=database, created_at=when, good=good and not failed,
                        verified=verified, failed_verification=failed, parent=parent,
                        status="ok" if good else "failed")


def daily(count: int, kind: str = "full", start: datetime = datetime(2026, 11, 26, 2, 0, tzinfo=UTC),
          step: timedelta = timedelta(days=1), database: str = "app") -> List[BackupRecord]:
    """``count`` backups, the newest at ``start``, one ``step`` apart; ids d0 (newest), d1, ..."""
    return [rec("%s%d" % (kind[0], i), start - i * step, kind=kind, database=database) for i in range(count)]


def reasons(plan) -> Dict[str, List[str]]:
    return {d.id: list(d.reasons) for d in plan.decisions}


def kept(plan) -> set:
    return set(plan.keep)


# ----------------------------------------------------------------------------- reasons

def test_default_full_policy_daily_weekly_monthly():
    backups = daily(400)  # f0 = 2026-11-26 (Thursday, 2026-W48) back to 2025-10-23
    plan = plan_retention(backups, {"full": DEFAULT_RETENTION["full"]}, NOW)
    why = reasons(plan)
    assert why["f0"] == ["newest good full", "daily slot 2026-11-26", "weekly slot 2026-W48", "monthly slot 2026-11"]
    assert why["f2"] == ["daily slot 2026-11-24"]
    assert why["f4"] == ["daily slot 2026-11-22", "weekly slot 2026-W47"]  # Sunday: the newest of its ISO week
    assert why["f6"] == ["daily slot 2026-11-20"]
    assert why["f7"] == ["expired"]
    assert why["f11"] == ["weekly slot 2026-W46"]
    assert why["f18"] == ["weekly slot 2026-W45"]
    assert why["f26"] == ["monthly slot 2026-10"]  # 31 October
    # 12 monthly slots: 2026-11 back to 2025-12, each the month's last day
    monthly = sorted(r for rs in why.values() for r in rs if r.startswith("monthly"))
    assert monthly[0] == "monthly slot 2025-12" and len(monthly) == 12
    assert len(plan.keep) == 7 + 2 + 11  # 7 days; W46 and W45 (W47 is a daily one); 11 more months
    assert all(why[i] == ["expired"] for i in plan.delete)
    assert plan.decisions[0].id == "f399" and plan.decisions[-1].id == "f0"  # oldest first


def test_hourly_and_yearly_slots():
    hourly = daily(30, kind="incremental", start=datetime(2026, 11, 24, 13, 30, tzinfo=UTC), step=timedelta(minutes=20))
    plan = plan_retention(hourly, {"incremental": {"hourly": 3}}, NOW)
    why = reasons(plan)
    assert why["i0"] == ["newest good incremental", "hourly slot 2026-11-24T13"]  # 13:30
    assert why["i2"] == ["hourly slot 2026-11-24T12"]  # 12:50, the newest of its hour
    assert why["i5"] == ["hourly slot 2026-11-24T11"]  # 11:50
    assert len(plan.keep) == 3
    yearly = [rec("y%d" % year, datetime(year, 6, 1, tzinfo=UTC)) for year in (2022, 2023, 2024)] + \
        [rec("y2024b", datetime(2024, 12, 31, 23, 0, tzinfo=UTC))]
    plan = plan_retention(yearly, {"full": {"yearly": 2}}, NOW)
    why = reasons(plan)
    assert why["y2024b"] == ["newest good full", "yearly slot 2024"]
    assert why["y2023"] == ["yearly slot 2023"]
    assert why["y2024"] == ["expired"] and why["y2022"] == ["expired"]


def test_keep_last_and_min_keep():
    backups = daily(6)
    plan = plan_retention(backups, {"full": {"keep_last": 3}}, NOW)
    assert reasons(plan)["f2"] == ["keep_last 3"] and kept(plan) == {"f0", "f1", "f2"}
    # one monthly slot keeps f0 alone: min_keep tops up with the newest good ones
    plan = plan_retention(backups, {"full": {"monthly": 1, "min_keep": 3}}, NOW)
    why = reasons(plan)
    assert why["f0"] == ["newest good full", "monthly slot 2026-11"]
    assert why["f1"] == ["min_keep 3"] and why["f2"] == ["min_keep 3"] and why["f3"] == ["expired"]
    # min_keep counts good backups already kept by slots
    plan = plan_retention(backups, {"full": {"daily": 3, "min_keep": 2}}, NOW)
    assert kept(plan) == {"f0", "f1", "f2"}


def test_policy_keeps_only_counts_above_zero_and_empty_policy_keeps_everything():
    backups = daily(5, kind="data")
    for policy in ({}, None, {"daily": 0, "weekly": 0}):
        plan = plan_retention(backups, {"data": policy}, NOW)
        assert not plan.delete
        assert all(r == ["no retention policy for data (kept)"] for r in reasons(plan).values())
    plan = plan_retention(daily(3, kind="schema"), {}, NOW)  # a kind missing from the policies: kept
    assert not plan.delete and plan.notes == {"schema/app": "no retention policy for schema (kept)"}


def test_newest_good_is_kept_even_when_a_slot_prefers_a_verified_one():
    backups = [rec("old-verified", datetime(2026, 11, 23, 2, tzinfo=UTC), verified=True),
               rec("mid", datetime(2026, 11, 24, 2, tzinfo=UTC)),
               rec("new", datetime(2026, 11, 25, 2, tzinfo=UTC))]
    plan = plan_retention(backups, {"full": {"weekly": 1}}, NOW)
    why = reasons(plan)
    assert why["old-verified"] == ["weekly slot 2026-W48"]
    assert why["new"] == ["newest good full"]
    assert why["mid"] == ["expired"]


def test_slot_prefers_the_newest_verified_backup():
    day = datetime(2026, 11, 24, tzinfo=UTC)
    backups = [rec("a", day + timedelta(hours=1), verified=True), rec("b", day + timedelta(hours=2), verified=True),
               rec("c", day + timedelta(hours=3)), rec("d", datetime(2026, 11, 25, 2, tzinfo=UTC))]
    plan = plan_retention(backups, {"full": {"daily": 2}}, NOW)
    why = reasons(plan)
    assert why["b"] == ["daily slot 2026-11-24"]
    assert why["a"] == ["expired"] and why["c"] == ["expired"]
    assert why["d"] == ["newest good full", "daily slot 2026-11-25"]


def test_failed_backups_older_than_the_newest_good_one_are_deleted():
    backups = daily(4)
    backups[2] = rec("f2", backups[2].created_at, failed=True)
    backups[3] = rec("f3", backups[3].created_at, good=False)
    plan = plan_retention(backups, {"full": {"daily": 7}}, NOW)
    why = reasons(plan)
    assert why["f2"] == ["failed verification"] and why["f3"] == ["status failed (not good)"]
    assert set(plan.delete) == {"f2", "f3"}


def test_failed_verification_never_fills_a_slot():
    backups = [rec("good", datetime(2026, 11, 24, 1, tzinfo=UTC)),
               rec("bad", datetime(2026, 11, 24, 3, tzinfo=UTC), failed=True),
               rec("newest", datetime(2026, 11, 25, 2, tzinfo=UTC))]
    plan = plan_retention(backups, {"full": {"daily": 7}}, NOW)
    assert reasons(plan)["good"] == ["daily slot 2026-11-24"] and plan.delete == ["bad"]


def test_newest_backup_not_good_deletes_nothing_and_says_why_everywhere():
    backups = daily(20)
    backups[0] = rec("f0", backups[0].created_at, failed=True)
    plan = plan_retention(backups, {"full": {"daily": 2}}, NOW)
    assert not plan.delete
    note = "newest full is not good: nothing of this kind is deleted"
    assert all(d.reasons[0] == note for d in plan.decisions)
    assert plan.notes == {"full/app": note}
    assert reasons(plan)["f1"] == [note, "newest good full", "daily slot 2026-11-25"]
    # a group of failed backups only: nothing to count, nothing deleted
    plan = plan_retention([rec("x", NOW, failed=True), rec("y", NOW - timedelta(days=30), good=False)],
                          {"full": {"daily": 1}}, NOW)
    assert not plan.delete


def test_other_groups_are_planned_when_one_is_held():
    backups = daily(10) + daily(10, kind="schema")
    backups[0] = rec("f0", backups[0].created_at, failed=True)
    plan = plan_retention(backups, {"full": {"daily": 2}, "schema": {"daily": 2}}, NOW)
    assert plan.delete and all(i.startswith("s") for i in plan.delete)


def test_backups_stopped_deletes_nothing():
    backups = daily(20, start=NOW - timedelta(days=3))  # the daily runs stopped three days ago
    schedules = {"full": "0 2 * * *"}
    plan = plan_retention(backups, {"full": {"daily": 2}}, NOW, schedules=schedules)
    assert not plan.delete
    first = plan.decisions[0].reasons[0]
    assert first.startswith("newest good full is 3d00h old, its schedule '0 2 * * *' runs every 24h00m")
    assert first.endswith("backups stopped, nothing of this kind is deleted")
    # within the interval plus the margin: planned as usual
    plan = plan_retention(backups, {"full": {"daily": 2}}, NOW - timedelta(days=2, hours=-1), schedules=schedules)
    assert len(plan.delete) == 18
    # no schedule (an on-demand kind): no such check
    assert len(plan_retention(backups, {"full": {"daily": 2}}, NOW, schedules={"full": None}).delete) == 18


def test_parent_chain_of_a_kept_backup_is_kept():
    base = datetime(2026, 11, 20, 2, tzinfo=UTC)
    backups = [rec("full-old", base - timedelta(days=30)),
               rec("full", base),
               rec("inc1", base + timedelta(hours=1), kind="incremental", parent="full"),
               rec("inc2", base + timedelta(hours=2), kind="incremental", parent="inc1"),
               rec("inc3", base + timedelta(hours=3), kind="incremental", parent="inc2"),
               rec("full-new", base + timedelta(days=5)),
               rec("orphan-inc", base + timedelta(hours=4), kind="incremental", parent="gone")]
    plan = plan_retention(backups, {"full": {"daily": 1}, "incremental": {"hourly": 1}}, NOW)
    why = reasons(plan)
    assert why["orphan-inc"] == ["newest good incremental", "hourly slot 2026-11-20T06"]
    assert why["inc3"] == ["expired"]  # not needed: nothing kept depends on it
    plan = plan_retention(backups[:-1], {"full": {"daily": 1}, "incremental": {"hourly": 1}}, NOW)
    why = reasons(plan)
    assert why["inc3"] == ["newest good incremental", "hourly slot 2026-11-20T05"]
    assert why["inc2"] == ["parent of inc3"] and why["inc1"] == ["parent of inc2"]
    assert why["full"] == ["parent of inc1"]
    assert why["full-old"] == ["expired"]
    assert plan.delete == ["full-old"]


def test_a_failed_parent_of_a_kept_backup_is_kept():
    base = datetime(2026, 11, 20, 2, tzinfo=UTC)
    backups = [rec("base", base, failed=True), rec("ok-full", base + timedelta(hours=1)),
               rec("inc", base + timedelta(hours=2), kind="incremental", parent="base")]
    plan = plan_retention(backups, {"full": {"daily": 1}, "incremental": {"daily": 1}}, NOW)
    assert reasons(plan)["base"] == ["failed verification", "parent of inc"]
    assert not plan.delete


# ----------------------------------------------------------------------------- time zones and calendars

def test_daily_slots_follow_the_configured_time_zone():
    # 22:30 and 23:30 UTC on the 23rd are 23:30 on the 23rd and 00:30 on the 24th in Berlin (CET, UTC+1)
    backups = [rec("a", datetime(2026, 11, 23, 22, 30, tzinfo=UTC)), rec("b", datetime(2026, 11, 23, 23, 30, tzinfo=UTC)),
               rec("c", datetime(2026, 11, 24, 0, 30, tzinfo=UTC))]
    utc = plan_retention(backups, {"full": {"daily": 2}}, NOW, "UTC")
    assert reasons(utc)["b"] == ["daily slot 2026-11-23"] and reasons(utc)["a"] == ["expired"]
    assert reasons(utc)["c"] == ["newest good full", "daily slot 2026-11-24"]
    berlin = plan_retention(backups, {"full": {"daily": 2}}, NOW, "Europe/Berlin")
    assert reasons(berlin)["a"] == ["daily slot 2026-11-23"] and reasons(berlin)["b"] == ["expired"]
    assert reasons(berlin)["c"] == ["newest good full", "daily slot 2026-11-24"]


def test_monthly_slots_around_midnight_of_a_month_in_new_york():
    backups = [rec("oct", datetime(2026, 11, 1, 3, 0, tzinfo=UTC)),   # 23:00 on 31 October in New York (EDT)
               rec("nov", datetime(2026, 11, 1, 5, 0, tzinfo=UTC))]   # 00:00 on 1 November in New York (EST after 06:00 UTC)
    plan = plan_retention(backups, {"full": {"monthly": 2}}, NOW, "America/New_York")
    assert reasons(plan)["oct"] == ["monthly slot 2026-10"]
    plan = plan_retention(backups, {"full": {"monthly": 2}}, NOW, "UTC")
    assert reasons(plan)["oct"] == ["expired"]


@pytest.mark.parametrize("moment,label", [
    (datetime(2025, 12, 28, 12, tzinfo=UTC), "2025-W52"),   # Sunday
    (datetime(2025, 12, 29, 12, tzinfo=UTC), "2026-W01"),   # Monday: ISO year 2026 begins in December
    (datetime(2026, 12, 31, 12, tzinfo=UTC), "2026-W53"),   # 2026 has 53 ISO weeks
    (datetime(2027, 1, 3, 12, tzinfo=UTC), "2026-W53"),     # Sunday 3 January still belongs to 2026
    (datetime(2027, 1, 4, 0, 0, tzinfo=UTC), "2027-W01"),
])
def test_iso_weeks_at_the_year_end(moment, label):
    assert period_label("weekly", moment) == label


def test_weekly_slot_across_the_year_end_and_a_time_zone():
    # Sunday 2027-01-03 23:30 UTC is Monday 00:30 in Berlin: a new ISO week (2027-W01) there, not in UTC
    backups = [rec("thu", datetime(2026, 12, 31, 2, tzinfo=UTC)), rec("sun", datetime(2027, 1, 3, 23, 30, tzinfo=UTC))]
    now = datetime(2027, 1, 4, 6, tzinfo=UTC)
    assert reasons(plan_retention(backups, {"full": {"weekly": 2}}, now, "UTC"))["thu"] == ["expired"]
    berlin = reasons(plan_retention(backups, {"full": {"weekly": 2}}, now, "Europe/Berlin"))
    assert berlin["thu"] == ["weekly slot 2026-W53"]
    assert berlin["sun"] == ["newest good full", "weekly slot 2027-W01"]


def test_hourly_slots_through_a_daylight_saving_change():
    # Berlin falls back on 2026-10-25 at 01:00 UTC: 00:30 and 01:30 UTC are both 02:30 local
    backups = [rec("cest", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)), rec("cet", datetime(2026, 10, 25, 1, 30, tzinfo=UTC))]
    plan = plan_retention(backups, {"full": {"hourly": 5}}, NOW, "Europe/Berlin")
    assert reasons(plan)["cet"] == ["newest good full", "hourly slot 2026-10-25T02"]
    assert reasons(plan)["cest"] == ["expired"]  # one wall-clock hour, one slot (as borg and restic do)


# ----------------------------------------------------------------------------- inputs and output

def test_record_of_a_catalog_backup():
    manifest = {"format_version": FORMAT_VERSION, "id": "incremental-app-20261124T020000Z", "type": "incremental",
                "status": "ok", "database": "app", "created_at": "2026-11-24T02:00:00.000000Z", "files": [],
                "parent": "full-app-20261123T020000Z",
                "verification": {"level": "checksum", "at": iso(NOW), "ok": True, "details": "", "duration_seconds": 1}}
    record = record_of(Backup(manifest, "/x/incremental/incremental-app-20261124T020000Z.json"))
    assert record.good and record.verified and not record.failed_verification
    assert record.parent == "full-app-20261123T020000Z"
    assert record.created_at == datetime(2026, 11, 24, 2, tzinfo=UTC)
    manifest["verification"]["ok"] = False
    record = record_of(Backup(manifest, "/x"))
    assert not record.good and record.failed_verification and not record.verified


def test_wrong_inputs_are_named():
    with pytest.raises(ConfigError, match="timezone 'Mars/Olympus' is not valid"):
        time_zone("Mars/Olympus")
    with pytest.raises(ConfigError, match=r"retention.full.fortnightly is not valid: use one of hourly"):
        normalize_policy("full", {"fortnightly": 2})
    with pytest.raises(ConfigError, match=r"retention.full.daily='-1' is not valid: use a whole number >= 0"):
        normalize_policy("full", {"daily": "-1"})
    with pytest.raises(ConfigError, match=r"retention.full.daily=True is not valid"):
        normalize_policy("full", {"daily": True})
    assert normalize_policy("full", {"daily": "7", "weekly": 0}) == {"daily": 7}
    with pytest.raises(ValueError, match="aware"):
        plan_retention([], {}, datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="leftover_grace='6 hours' is not valid"):
        parse_duration("leftover_grace", "6 hours")
    assert parse_duration("x", "1d12h") == timedelta(hours=36) and parse_duration("x", 90) == timedelta(seconds=90)


def test_environment_retention_variables_govern_full_backups():
    cfg = load_config(env={"BACKUP_RETENTION_DAILY": "3", "BACKUP_RETENTION_WEEKLY": "0", "BACKUP_RETENTION_MONTHLY": "6"})
    policies = policies_of(cfg)
    assert policies["full"] == {"daily": 3, "monthly": 6}
    assert policies["schema"] == {"weekly": 8} and policies["data"] == {}
    assert policies_of(cfg, {"schema": {"keep_last": 2}})["schema"] == {"keep_last": 2}
    with pytest.raises(ConfigError, match="policy.nightly is not valid"):
        policies_of(cfg, {"nightly": {"daily": 1}})


def test_format_plan():
    plan = plan_retention(daily(3), {"full": {"daily": 2}}, NOW)
    lines = format_plan(plan)
    assert lines[0].split()[:3] == ["ACTION", "ID", "TYPE"]
    assert lines[1].split()[:5] == ["delete", "f2", "full", "app", "2026-11-24T02:00:00Z"]
    assert lines[1].endswith("expired")
    assert lines[-1] == "keep 2, delete 1 of 3 backups"
    assert format_plan(plan.as_dicts()) == lines
    assert format_plan([]) == ["no backups"]


# ----------------------------------------------------------------------------- properties

KINDS = ("full", "incremental", "schema", "data")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Kolkata", "Australia/Lord_Howe")
SCHEDULES = (None, "0 2 * * *", "0 * * * *", "0 3 * * 1")
BASE = datetime(2025, 12, 1, tzinfo=UTC)


ROWS = st.lists(st.tuples(
    st.sampled_from(("ok", "ok", "ok", "verified", "verified", "failed", "status")),  # state
    st.sampled_from(KINDS),
    st.sampled_from(("app", "crm")),
    st.integers(0, 60 * 24 * 500),  # minutes after BASE (scaled down by the spread)
    st.integers(-3, 45),  # parent: an earlier backup's index, -1 a missing one, below that none
), max_size=45)
POLICIES = st.fixed_dictionaries({kind: st.dictionaries(st.sampled_from(POLICY_KEYS), st.integers(0, 4), max_size=4)
                                  for kind in KINDS})


@st.composite
def catalogs(draw):
    rows = draw(ROWS)
    spread = draw(st.sampled_from((60 * 24 * 500 // (60 * 30), 60 * 24 * 500 // (60 * 24 * 14), 1)))  # hours, weeks, years
    records = []
    for index, (state, kind, database, minutes, parent_index) in enumerate(rows):
        if parent_index == -1 and index:
            parent = "missing"
        elif 0 <= parent_index < index:
            parent = "b%02d" % parent_index
        else:
            parent = None
        records.append(rec("b%02d" % index, BASE + timedelta(minutes=minutes // spread), kind=kind, database=database,
                           good=state != "status", verified=state == "verified", failed=state == "failed",
                           parent=parent))
    newest = max((r.created_at for r in records), default=BASE)
    now = newest + timedelta(minutes=draw(st.integers(0, 60 * 24 * 4)))
    schedules = draw(st.fixed_dictionaries({kind: st.sampled_from(SCHEDULES) for kind in KINDS}))
    return records, draw(POLICIES), now, draw(st.sampled_from(ZONES)), schedules


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _groups(records):
    groups = defaultdict(list)
    for record in records:
        groups[(record.type, record.database)].append(record)
    for members in groups.values():
        members.sort(key=lambda r: (r.created_at, r.id))
    return groups


@PROPERTY_SETTINGS
@given(catalogs())
def test_property_never_empties_a_group_nor_deletes_its_newest_good_backup(case):
    records, policies, now, zone, schedules = case
    plan = plan_retention(records, policies, now, zone, schedules)
    keep = kept(plan)
    assert len(plan.decisions) == len(records)
    for members in _groups(records).values():
        assert keep & {r.id for r in members}, "a group was emptied"
        good = [r for r in members if r.good]
        if good:
            assert good[-1].id in keep, "the newest good backup was deleted"


@PROPERTY_SETTINGS
@given(catalogs())
def test_property_never_deletes_a_needed_parent(case):
    records, policies, now, zone, schedules = case
    plan = plan_retention(records, policies, now, zone, schedules)
    keep = kept(plan)
    ids = {r.id for r in records}
    for record in records:
        if record.id in keep and record.parent in ids:
            assert record.parent in keep, "parent %s of kept %s deleted" % (record.parent, record.id)


@PROPERTY_SETTINGS
@given(catalogs())
def test_property_applying_twice_equals_applying_once(case):
    records, policies, now, zone, schedules = case
    first = plan_retention(records, policies, now, zone, schedules)
    remaining = [r for r in records if r.id in kept(first)]
    second = plan_retention(remaining, policies, now, zone, schedules)
    assert second.delete == []
    assert kept(second) == kept(first)


@PROPERTY_SETTINGS
@given(catalogs())
def test_property_slot_counts_never_exceed_the_policy(case):
    records, policies, now, zone, schedules = case
    plan = plan_retention(records, policies, now, zone, schedules)
    by_group = defaultdict(lambda: defaultdict(list))
    for decision in plan.decisions:
        for reason in decision.reasons:
            granularity = reason.split(" ", 1)[0]
            if granularity in SLOT_GRANULARITIES and " slot " in reason:
                by_group[(decision.record.type, decision.record.database)][granularity].append(reason)
                assert decision.record.good, "a bad backup filled a slot"
    for (kind, _database), slots in by_group.items():
        for granularity, labels in slots.items():
            assert len(labels) <= policies[kind].get(granularity, 0)
            assert len(labels) == len(set(labels)), "one slot kept two backups"


@PROPERTY_SETTINGS
@given(catalogs())
def test_property_bad_newest_or_no_policy_deletes_nothing_of_the_group(case):
    records, policies, now, zone, schedules = case
    plan = plan_retention(records, policies, now, zone, schedules)
    deleted = set(plan.delete)
    for (kind, _database), members in _groups(records).items():
        member_ids = {r.id for r in members}
        if not members[-1].good or not normalize_policy(kind, policies[kind]):
            assert not member_ids & deleted
        good = [r for r in members if r.good]
        min_keep = policies[kind].get("min_keep", 0)
        assert len([r for r in good if r.id not in deleted]) >= min(min_keep, len(good))
    for decision in plan.decisions:
        if not decision.keep:
            assert decision.reasons and set(decision.reasons) <= {
                "expired", "failed verification", "status failed (not good)"}, decision.reasons
