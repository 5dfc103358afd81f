"""Backup age against the schedule: ok, warning and critical at the documented thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.ops.health import check_backup_age

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _backup(repo: Repository, kind: str, age: timedelta, status: str = "ok") -> None:
    moment = NOW - age
    backup_id = repo.new_id(kind, "app", moment)
    Backup({"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": status, "database": "app",
            "created_at": iso(moment), "files": []}, repo.manifest_path(kind, backup_id)).save()


@pytest.mark.parametrize("age,status", [
    (timedelta(hours=23), "ok"), (timedelta(hours=24, minutes=29), "ok"), (timedelta(hours=24, minutes=31), "warning"),
    (timedelta(hours=25, minutes=59), "warning"), (timedelta(hours=26, minutes=1), "critical"),
])
def test_daily_full_thresholds(tmp_path, age, status):
    repo = Repository(str(tmp_path))
    repo.prepare()
    _backup(repo, "full", age)
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/app"})
    result = check_backup_age(cfg, "full", now=NOW)
    assert result["status"] == status, result
    assert result["check"] == "age:full"


def test_weekly_schema_and_missing_or_failed_backups(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/app"})
    assert check_backup_age(cfg, "schema", now=NOW)["status"] == "critical"
    _backup(repo, "schema", timedelta(days=1), status="failed")  # a failed run does not count
    assert check_backup_age(cfg, "schema", now=NOW)["status"] == "critical"
    _backup(repo, "schema", timedelta(days=6, hours=23))
    assert check_backup_age(cfg, "schema", now=NOW)["status"] == "ok"
