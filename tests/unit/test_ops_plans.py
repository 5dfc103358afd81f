"""The plans every front end shows before it runs an operation (check mode, diff, --dry-run)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.ops.backup import database_of, decide_backup, plan_backup, restore_command
from seawall_pgbackup.ops.cleanup import changed, diff, plan_cleanup, run_cleanup
from seawall_pgbackup.ops.health import failure
from seawall_pgbackup.ops.listing import newest_per_type

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def newest(age: timedelta, backup_id: str = "full-app-20261126T100000Z"):
    """What decide_backup reads of the newest good backup: its id and start."""
    return SimpleNamespace(id=backup_id, created_at=NOW - age, kind="full")


@pytest.mark.parametrize("age, max_age, force, take, reason", [
    (timedelta(hours=2), 20 * 3600, False, False,
     "a good full backup of app (full-app-20261126T100000Z) is 2h old, younger than max_age 20h"),
    (timedelta(hours=21), 20 * 3600, False, True,
     "the newest good full backup of app (full-app-20261126T100000Z) is 21h old, not younger than max_age 20h"),
    (timedelta(hours=20), 20 * 3600, False, True,  # exactly max_age old: due
     "the newest good full backup of app (full-app-20261126T100000Z) is 20h old, not younger than max_age 20h"),
    (timedelta(minutes=5), 0, False, True, "max_age is 0: every run takes a backup"),
    (timedelta(minutes=5), 20 * 3600, True, True, "force: a backup is taken whatever the newest one's age"),
])
def test_the_max_age_window_decides_with_a_reason(age, max_age, force, take, reason):
    plan = decide_backup("full", "app", newest(age), max_age, force, now=NOW)
    assert (plan.take, plan.reason) == (take, reason)
    assert plan.age_seconds == int(age.total_seconds())
    assert plan.as_dict() == {"type": "full", "database": "app", "take": take, "reason": reason,
                              "newest": "full-app-20261126T100000Z", "age_seconds": int(age.total_seconds()),
                              "max_age_seconds": max_age, "force": force}


def test_no_backup_yet_is_always_due():
    plan = decide_backup("schema", "app", None, 3600, now=NOW)
    assert (plan.take, plan.reason, plan.age_seconds) == (True, "no good schema backup of app yet", None)
    assert plan.as_dict()["newest"] is None


def test_a_backup_from_the_future_is_age_zero():
    plan = decide_backup("full", "app", newest(-timedelta(minutes=3)), 60, now=NOW)
    assert plan.age_seconds == 0 and plan.take is False


def test_plan_backup_reads_an_empty_repository_and_names_the_database(tmp_path):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path / "none"), "DATABASE_URL": "postgresql://u@h/shop"})
    plan = plan_backup(cfg, max_age="20h")
    assert (plan.kind, plan.database, plan.take, plan.max_age_seconds) == ("full", "shop", True, 72000)
    assert not (tmp_path / "none").exists()  # a plan writes nothing


def test_plan_backup_rejects_a_wrong_max_age(tmp_path):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/shop"})
    with pytest.raises(ConfigError, match=r"^max_age='soon' is not valid: use seconds or a duration"):
        plan_backup(cfg, max_age="soon")


def test_database_of_follows_libpq():
    assert database_of("postgresql://u@h/shop", env={}) == "shop"
    assert database_of("postgresql://u@h", env={"PGDATABASE": "envdb"}) == "envdb"
    assert database_of("postgresql://u@h", env={}) == "u"
    assert database_of("postgresql://h", env={"PGUSER": "pguser"}) == "pguser"


def test_restore_command_adds_globals_only_for_a_full_backup():
    full = SimpleNamespace(id="full-app-1", kind="full")
    schema = SimpleNamespace(id="schema-app-1", kind="schema")
    assert restore_command(full) == ("seawall-pgbackup restore full-app-1 --target-url "
                                     "postgresql://USER@HOST:PORT/NEWDB --with-globals")
    assert restore_command(schema, "/var/my backups") == ("seawall-pgbackup --backup-dir '/var/my backups' restore "
                                                          "schema-app-1 --target-url postgresql://USER@HOST:PORT/NEWDB")


def test_cleanup_plan_of_an_empty_repository_changes_nothing(tmp_path):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path / "none")})
    plan = plan_cleanup(cfg)
    assert plan["dry_run"] is True and plan["plan"] == [] and changed(plan) is False
    assert diff(plan) == {"before": {"backups": [], "leftovers": []}, "after": {"backups": [], "leftovers": []}}
    with pytest.raises(ConfigError, match=r"^lock_wait='later' is not valid"):
        run_cleanup(cfg, lock_wait="later")


@pytest.mark.parametrize("result, expected", [
    ({"dry_run": True, "to_delete": ["a"], "leftovers_to_remove": [], "deleted": [], "leftovers_removed": []}, True),
    ({"dry_run": True, "to_delete": [], "leftovers_to_remove": ["/x"], "deleted": [], "leftovers_removed": []}, True),
    ({"dry_run": True, "to_delete": [], "leftovers_to_remove": [], "deleted": [], "leftovers_removed": []}, False),
    # a real run changed only what it did, not what it planned
    ({"dry_run": False, "to_delete": ["a"], "leftovers_to_remove": [], "deleted": [], "leftovers_removed": []}, False),
    ({"dry_run": False, "to_delete": ["a"], "leftovers_to_remove": [], "deleted": ["a"], "leftovers_removed": []},
     True),
    ({"dry_run": False, "to_delete": [], "leftovers_to_remove": ["/x"], "deleted": [], "leftovers_removed": ["/x"]},
     True),
])
def test_cleanup_changed(result, expected):
    assert changed(result) is expected


def test_cleanup_diff_shows_the_ids_before_and_kept_after():
    result = {"plan": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "kept": ["b", "c"], "leftovers_to_remove": ["/x"]}
    assert diff(result) == {"before": {"backups": ["a", "b", "c"], "leftovers": ["/x"]},
                            "after": {"backups": ["b", "c"], "leftovers": []}}


REPORT = {"status": "warning", "exit_code": 1, "checks": [
    {"check": "connectivity", "status": "ok", "reason": "connected"},
    {"check": "disk", "status": "warning", "reason": "10% free"},
]}


@pytest.mark.parametrize("fail_on, fails", [("critical", False), ("warning", True), ("never", False)])
def test_health_fails_from_the_chosen_status(fail_on, fails):
    message = failure(REPORT, fail_on)
    assert (message == "health is WARNING: disk warning: 10% free") if fails else message is None


def test_health_critical_fails_unless_never():
    critical = dict(REPORT, status="critical", exit_code=2)
    assert failure(critical) == "health is CRITICAL: disk warning: 10% free"
    assert failure(critical, "never") is None


def test_newest_per_type_keeps_the_newest_of_each_type_oldest_first():
    rows = [{"id": "full-1", "type": "full", "created_at": "2026-11-01T02:00:00Z"},
            {"id": "schema-1", "type": "schema", "created_at": "2026-11-02T02:00:00Z"},
            {"id": "full-2", "type": "full", "created_at": "2026-11-03T02:00:00Z"}]
    assert [r["id"] for r in newest_per_type(rows)] == ["schema-1", "full-2"]
    assert newest_per_type([]) == []
