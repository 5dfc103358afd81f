"""Time is checked, not trusted (issue #11 cases 5, 9 and long schedules): the retention planner, ``latest``,
max_age, health and the cron gap against future-dated, duplicated and damaged backups; hypothesis properties
over adversarial catalogs (what the strict manifest parser lets through)."""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.clock import FUTURE_TOLERANCE, iso, is_future
from seawall_pgbackup.core.cron import Cron
from seawall_pgbackup.core.errors import NotFound
from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup
from seawall_pgbackup.ops.backup import decide_backup
from seawall_pgbackup.ops.health import check_backup_age
from seawall_pgbackup.ops.health_checks import check_clock_skew
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.repo.retention import POLICY_KEYS, BackupRecord, normalize_policy, plan_retention

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def rec(backup_id: str, when: datetime, kind: str = "full", database: str = "app", good: bool = True,
        parent=None, damaged=None) -> BackupRecord:
    return BackupRecord(id=backup_id, type=kind, database=database, created_at=when, good=good, parent=parent,
                        status="ok" if good else "failed", damaged=damaged)


# ----------------------------------------------------------------------------- the clock

def test_future_tolerance():
    assert not is_future(NOW + FUTURE_TOLERANCE, NOW)
    assert is_future(NOW + FUTURE_TOLERANCE + timedelta(seconds=1), NOW)
    assert not is_future(NOW - timedelta(days=400), NOW)


# ----------------------------------------------------------------------------- case 5: the planner

def test_a_future_backup_pushes_no_present_backup_out_and_is_kept_uncounted():
    present = [rec("p%d" % i, NOW - timedelta(days=i, hours=1)) for i in range(5)]  # p0 just taken
    future = rec("f", NOW + timedelta(days=1))
    plan = plan_retention(present + [future], {"full": {"keep_last": 1}}, NOW)
    assert "p0" in plan.keep, "the backup just taken was deleted"
    assert plan.decision("p0").reasons[0] == "newest good full"
    assert "f" in plan.keep
    assert plan.decision("f").reasons == ["dated 24h00m ahead of now (clock skew?): kept, not counted"]
    assert set(plan.delete) == {"p1", "p2", "p3", "p4"}
    # the same plan for the present backups as without the future one
    alone = plan_retention(present, {"full": {"keep_last": 1}}, NOW)
    assert [(d.id, d.action, d.reasons) for d in alone.decisions] == \
        [(d.id, d.action, d.reasons) for d in plan.decisions if d.id != "f"]


def test_within_the_tolerance_a_backup_is_present():
    plan = plan_retention([rec("old", NOW - timedelta(days=2)), rec("soon", NOW + timedelta(minutes=3))],
                          {"full": {"keep_last": 1}}, NOW)
    assert plan.keep == ["soon"] and plan.delete == ["old"]


def test_only_future_backups_keep_everything():
    plan = plan_retention([rec("a", NOW + timedelta(days=1)), rec("b", NOW + timedelta(days=2))],
                          {"full": {"keep_last": 1}}, NOW)
    assert plan.delete == []


def test_the_runs_stopped_rule_ignores_future_backups():
    backups = [rec("p%d" % i, NOW - timedelta(days=10 + i)) for i in range(3)] + [rec("f", NOW + timedelta(hours=3))]
    plan = plan_retention(backups, {"full": {"keep_last": 1}}, NOW, schedules={"full": "0 2 * * *"})
    assert plan.delete == [] and "backups stopped" in plan.notes["full/app"]


# ----------------------------------------------------------------------------- case 9: damaged files

def test_a_damaged_newest_backup_expires_nothing():
    backups = [rec("old", NOW - timedelta(days=1)), rec("new", NOW - timedelta(hours=1))]
    plan = plan_retention(backups, {"full": {"keep_last": 1}}, NOW,
                          damaged={"new": "new.dump has 10 bytes, 99 recorded"})
    assert plan.delete == []
    assert plan.decision("old").reasons[0].startswith("newest full is not good")
    assert "files not intact: new.dump has 10 bytes, 99 recorded (not good)" in plan.decision("new").reasons


def test_a_damaged_older_backup_fills_no_slot():
    backups = [rec("a", NOW - timedelta(days=2)), rec("b", NOW - timedelta(days=1)), rec("c", NOW - timedelta(hours=1))]
    plan = plan_retention(backups, {"full": {"keep_last": 2}}, NOW, damaged={"b": "b.dump is missing"})
    assert set(plan.keep) == {"a", "c"} and plan.delete == ["b"]


def test_catalog_damaged_is_a_stat_of_the_listing(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    intact = _write(repo, NOW - timedelta(days=1))
    truncated = _write(repo, NOW - timedelta(hours=2))
    missing = _write(repo, NOW - timedelta(hours=1))
    with open(os.path.join(repo.kind_dir("full"), truncated.manifest.files[0].name), "r+b") as handle:
        handle.truncate(3)
    os.unlink(os.path.join(repo.kind_dir("full"), missing.manifest.files[0].name))
    found = repo.damaged(repo.backups(include_bad=True))
    assert set(found) == {truncated.id, missing.id} and intact.id not in found
    assert found[truncated.id].endswith("has 3 bytes, 64 recorded")
    assert found[missing.id].endswith("is missing")


# ----------------------------------------------------------------------------- latest, max_age, health

def _write(repo: Repository, moment: datetime, kind: str = "full", database: str = "app") -> Backup:
    backup_id = repo.new_id(kind, database, moment)
    data = random.Random(backup_id).randbytes(64)
    name = backup_id + ".dump"
    with open(os.path.join(repo.kind_dir(kind), name), "wb") as handle:
        handle.write(data)
    manifest = {"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": "ok", "database": database,
                "created_at": iso(moment), "finished_at": iso(moment + timedelta(seconds=5)),
                "files": [{"name": name, "role": "database", "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "compression": "none"}]}
    backup = Backup(manifest, repo.manifest_path(kind, backup_id))
    backup.save()
    return backup


def test_latest_and_newest_before_skip_future_backups(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    now = datetime.now(UTC)
    present = _write(repo, now - timedelta(hours=1))
    future = _write(repo, now + timedelta(days=1))
    assert repo.find("latest", database="app").id == present.id
    assert repo.newest_before(now + timedelta(days=3), database="app").id == present.id
    assert repo.find(future.id).id == future.id  # by id it is still reachable
    os.unlink(present.manifest_path)
    with pytest.raises(NotFound, match="1 dated in the future"):
        repo.find("latest", database="app")


def test_max_age_is_never_satisfied_by_a_future_backup(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    future = _write(repo, NOW + timedelta(hours=6))
    plan = decide_backup("full", "app", future, max_age_seconds=86400, now=NOW)
    assert plan.take and "dated in the future" in plan.reason and plan.age_seconds is None


def test_health_never_calls_a_future_backup_fresh_and_warns_of_skew(tmp_path):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/app"})
    repo = Repository(str(tmp_path))
    repo.prepare()
    _write(repo, NOW - timedelta(days=3))
    future = _write(repo, NOW + timedelta(days=1, hours=2))
    age = check_backup_age(cfg, "full", NOW)
    assert age["status"] == "critical" and age["newest"] != future.id
    skew = check_clock_skew(repo, NOW)
    assert skew["status"] == "warning" and skew["ahead"] == [future.id]
    assert "%s is 26h00m ahead" % future.id in skew["reason"]
    assert check_clock_skew(repo, NOW + timedelta(days=2))["status"] == "ok"


# ----------------------------------------------------------------------------- case 10: long schedules

@pytest.mark.parametrize("expression,gap", [
    ("0 3 1 */3 *", timedelta(days=92)), ("@yearly", timedelta(days=366)), ("@annually", timedelta(days=366)),
    ("0 0 1 6 *", timedelta(days=366)), ("0 0 29 2 *", timedelta(days=4 * 365 + 1)),
    ("0 2 1 1,7 *", timedelta(days=184)), ("0 2 * * *", timedelta(days=1)), ("*/15 * * * *", timedelta(minutes=15)),
    ("0 0 1 * *", timedelta(days=31)), ("30 1,13 * * *", timedelta(hours=12)),
])
def test_long_schedules_have_their_real_gap(expression, gap):
    assert Cron(expression).longest_gap() == gap


@pytest.mark.parametrize("schedule,age_days", [("0 3 1 */3 *", 80), ("@yearly", 300)])
def test_health_is_ok_for_a_long_schedule_on_time(tmp_path, schedule, age_days):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/app",
                           "BACKUP_SCHEDULE_FULL": schedule})
    repo = Repository(str(tmp_path))
    repo.prepare()
    _write(repo, NOW - timedelta(days=age_days))
    assert cfg.kinds["full"].schedule == schedule
    assert check_backup_age(cfg, "full", NOW)["status"] == "ok"
    assert check_backup_age(cfg, "full", NOW + timedelta(days=400))["status"] == "critical"


# ----------------------------------------------------------------------------- properties

KINDS = ("full", "incremental")
BASE = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = st.lists(st.tuples(
    st.sampled_from(("ok", "ok", "ok", "failed", "damaged")),
    st.sampled_from(KINDS),
    st.sampled_from(("app", "crm")),
    st.integers(0, 60 * 24 * 60),  # minutes after BASE: 60 days
    st.integers(-2, 30),  # parent index; -1: a missing one
    st.sampled_from(("new", "new", "new", "new", "same-id", "same-time")),
), max_size=30)
POLICIES = st.fixed_dictionaries({kind: st.dictionaries(st.sampled_from(POLICY_KEYS), st.integers(0, 3), max_size=3)
                                  for kind in KINDS})


@st.composite
def adversarial(draw):
    """Records as the strict parser lets them through, plus a ``now`` anywhere in (or before) their span:
    future dates, a second manifest with the same id, same created_at, damaged files, bad newest."""
    records: List[BackupRecord] = []
    damaged: Dict[str, str] = {}
    for index, (state, kind, database, minutes, parent_index, twin) in enumerate(draw(ROWS)):
        when = BASE + timedelta(minutes=minutes)
        backup_id = "b%02d" % index
        if twin == "same-id" and records:
            backup_id = records[-1].id
        elif twin == "same-time" and records:
            when = records[-1].created_at
        parent = None
        if parent_index == -1 and index:
            parent = "missing"
        elif 0 <= parent_index < index:
            parent = "b%02d" % parent_index
        records.append(rec(backup_id, when, kind=kind, database=database, good=state != "failed", parent=parent))
        if state == "damaged":
            damaged[backup_id] = "%s.dump is missing" % backup_id
    now = BASE + timedelta(minutes=draw(st.integers(-60 * 24, 60 * 24 * 62)))
    schedules = draw(st.fixed_dictionaries({kind: st.sampled_from((None, "0 2 * * *", "0 3 1 */3 *"))
                                            for kind in KINDS}))
    return records, draw(POLICIES), now, schedules, damaged


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plan(case, records=None):
    all_records, policies, now, schedules, damaged = case
    return plan_retention(all_records if records is None else records, policies, now, "Europe/Berlin", schedules,
                          damaged=damaged)


def _present_groups(records, now, damaged):
    """Per (type, database): the present records, deduplicated by id as the planner does (the first by date)."""
    seen = set()
    groups = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.created_at, r.id)):
        if record.id in seen:
            continue
        seen.add(record.id)
        if not is_future(record.created_at, now):
            groups[(record.type, record.database)].append(record)
    return groups


@PROPERTY_SETTINGS
@given(adversarial())
def test_property_the_newest_good_present_backup_is_always_kept(case):
    records, _policies, now, _schedules, damaged = case
    keep = set(_plan(case).keep)
    for members in _present_groups(records, now, damaged).values():
        good = [r for r in members if r.good and r.id not in damaged]
        if good:
            assert good[-1].id in keep, "the newest good present backup %s was deleted" % good[-1].id


@PROPERTY_SETTINGS
@given(adversarial())
def test_property_future_backups_are_kept_and_push_nothing_out(case):
    records, _policies, now, _schedules, _damaged = case
    plan = _plan(case)
    future_ids = {r.id for r in records if is_future(r.created_at, now)}
    assert future_ids <= set(plan.keep)
    without = _plan(case, [r for r in records if not is_future(r.created_at, now)])
    # every present backup deleted with the future ones there is deleted without them too
    assert set(plan.delete) <= set(without.delete)


@PROPERTY_SETTINGS
@given(adversarial())
def test_property_no_needed_parent_is_deleted_and_duplicates_are_kept(case):
    records, _policies, _now, _schedules, _damaged = case
    plan = _plan(case)
    keep = set(plan.keep)
    ids = {r.id for r in records}
    for record in records:
        if record.id in keep and record.parent in ids:
            assert record.parent in keep
        if sum(1 for o in records if o.id == record.id) > 1:
            assert record.id in keep, "an id named by two manifests was deleted"


@PROPERTY_SETTINGS
@given(adversarial())
def test_property_a_damaged_or_bad_newest_present_backup_deletes_nothing_of_its_group(case):
    records, policies, now, _schedules, damaged = case
    deleted = set(_plan(case).delete)
    for (kind, _database), members in _present_groups(records, now, damaged).items():
        newest = members[-1]
        if not newest.good or newest.id in damaged or not normalize_policy(kind, policies[kind]):
            assert not {r.id for r in members} & deleted


@PROPERTY_SETTINGS
@given(adversarial(), st.randoms())
def test_property_deterministic_and_idempotent(case, rng):
    records = case[0]
    first = _plan(case)
    shuffled = list(records)
    rng.shuffle(shuffled)
    again = _plan(case, shuffled)

    def shape(plan):
        return [(d.id, d.action, d.reasons) for d in plan.decisions]

    assert shape(again) == shape(first)
    remaining = [r for r in records if r.id in set(first.keep)]
    second = _plan(case, remaining)
    assert second.delete == [] and set(second.keep) == set(first.keep)
