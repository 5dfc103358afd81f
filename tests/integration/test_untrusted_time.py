"""Time is checked, not trusted (issue #11 cases 5, 9 and the long-schedule part of 10), through the real
command against a real PostgreSQL 15: a backup dated in the future (a host clock that ran ahead) is never
``latest``, never fresh, never pushes the backup just taken out of retention; a newest backup whose data
file is truncated or missing never lets cleanup expire the older intact one; a quarterly or yearly
schedule on time is healthy."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.ops.backup import plan_backup
from tests.integration import cli
from tests.support import load_sample

UTC = timezone.utc
# One daily slot and nothing else: the policy under which a future backup used to evict the present one.
ONE_DAY = {"BACKUP_RETENTION_DAILY": "1", "BACKUP_RETENTION_WEEKLY": "0", "BACKUP_RETENTION_MONTHLY": "0"}


@pytest.fixture
def vtt(pg15):
    name = "vtt_time_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    try:
        yield name
    finally:
        pg15.drop_db(name)


def _manifest_path(backup_dir, backup) -> str:
    return os.path.join(str(backup_dir), backup["type"], backup["id"] + ".json")


def redate(backup_dir, backup, shift: timedelta) -> str:
    """Move a real backup's recorded time by ``shift`` (what a host clock that ran ahead or behind writes)."""
    path = _manifest_path(backup_dir, backup)
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    moment = datetime.now(UTC) + shift
    manifest["created_at"] = iso(moment)
    manifest["finished_at"] = iso(moment + timedelta(seconds=2))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    return manifest["created_at"]


def _ids(rows):
    return [row["id"] for row in rows]


def test_a_future_backup_is_never_latest_fresh_or_counted(pg15, vtt, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir, **ONE_DAY)
    old = cli.create(env, "full")
    redate(backup_dir, old, -timedelta(days=2))
    future = cli.create(env, "full")
    redate(backup_dir, future, timedelta(days=1))

    # max_age: the future backup is no evidence of a recent one (pg_backup's decision, on the real catalog)
    cfg = load_config(env=env)
    decision = plan_backup(cfg, "full", max_age="20h")
    assert decision.take and decision.newest is not None and decision.newest.id == old["id"], decision.as_dict()

    just_taken = cli.create(env, "full")
    assert _ids(cli.listing(env)) == [old["id"], just_taken["id"], future["id"]]  # listed, in recorded order
    assert plan_backup(cfg, "full", max_age="20h").take is False  # the present one satisfies it

    # restore latest / verify latest / drill pick the backup just taken, not the future one
    target = vtt + "_latest"
    try:
        out = cli.run(["restore", "latest", "--target-url", pg15.url(target, with_password=False), "--json"], env)
        assert json.loads(out.stdout)["backup_id"] == just_taken["id"]
    finally:
        pg15.drop_db(target)
    verified = json.loads(cli.run(["verify", "latest", "--level", "checksum", "--json"], env).stdout)
    assert [v["id"] for v in verified] == [just_taken["id"]]

    # health: fresh because of the backup just taken, and a clock-skew warning naming the future one
    proc = cli.run(["health", "--json"], env, check=False)
    report = json.loads(proc.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["age:full"]["newest"] == just_taken["id"] and checks["age:full"]["status"] == "ok"
    assert checks["clock-skew"]["status"] == "warning" and checks["clock-skew"]["ahead"] == [future["id"]]
    assert "%s is 23h" % future["id"] in checks["clock-skew"]["reason"] \
        or "%s is 24h" % future["id"] in checks["clock-skew"]["reason"]
    assert proc.returncode != 0 and report["status"] in ("warning", "critical")

    # cleanup: the backup just taken stays, the future one stays (uncounted), the old one expires
    result = json.loads(cli.run(["cleanup", "--json"], env).stdout)
    assert result["deleted"] == [old["id"]], result["plan"]
    assert _ids(cli.listing(env)) == [just_taken["id"], future["id"]]
    decisions = {row["id"]: row for row in result["plan"]}
    assert decisions[just_taken["id"]]["reasons"][0] == "newest good full"
    assert "clock skew" in decisions[future["id"]]["reasons"][0]
    for name in (f["name"] for f in just_taken["files"]):
        assert os.path.isfile(os.path.join(str(backup_dir), "full", name))


def test_a_future_backup_alone_is_not_latest_and_health_is_critical(pg15, vtt, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir)
    future = cli.create(env, "full")
    redate(backup_dir, future, timedelta(hours=3))
    line = cli.error_line(cli.run(["restore", "latest", "--target-url",
                                   pg15.url(vtt + "_never", with_password=False)], env, check=False))
    assert "no good full backup of %s" % vtt in line and "dated in the future" in line
    assert vtt + "_never" not in pg15.databases()
    report = json.loads(cli.run(["health", "--json"], env, check=False).stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["age:full"]["status"] == "critical" and report["status"] == "critical"
    # by its id it is still reachable (someone who knows the clock was wrong can restore it)
    verified = json.loads(cli.run(["verify", future["id"], "--level", "checksum", "--json"], env).stdout)
    assert [(v["id"], v["ok"]) for v in verified] == [(future["id"], True)]


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_newest_backup_never_expires_the_older_intact_one(pg15, vtt, tmp_path, damage):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir, **ONE_DAY)
    older = cli.create(env, "full")
    redate(backup_dir, older, -timedelta(days=2))
    newest = cli.create(env, "full")
    data = os.path.join(str(backup_dir), "full", newest["files"][0]["name"])
    if damage == "truncated":
        with open(data, "r+b") as handle:
            handle.truncate(newest["files"][0]["size"] // 2)
    else:
        os.unlink(data)

    result = json.loads(cli.run(["cleanup", "--json"], env).stdout)
    assert result["deleted"] == [] and result["to_delete"] == [], result["plan"]
    decisions = {row["id"]: row for row in result["plan"]}
    assert any("files not intact" in r for r in decisions[newest["id"]]["reasons"]), decisions
    assert "newest full is not good" in decisions[older["id"]]["reasons"][0]
    for entry in older["files"]:
        path = os.path.join(str(backup_dir), "full", entry["name"])
        assert os.path.getsize(path) == entry["size"]
    assert os.path.isfile(_manifest_path(backup_dir, older))

    # Once a good backup is taken again, the damaged one and the old one expire normally.
    fresh = cli.create(env, "full")
    result = json.loads(cli.run(["cleanup", "--json"], env).stdout)
    assert fresh["id"] in result["kept"] and set(result["deleted"]) == {older["id"], newest["id"]}, result["plan"]


@pytest.mark.parametrize("schedule,age,status", [
    ("0 3 1 */3 *", timedelta(days=80), "ok"), ("@yearly", timedelta(days=300), "ok"),
    ("0 3 1 */3 *", timedelta(days=120), "critical"),  # a quarterly run is at most 92 days apart
])
def test_a_long_schedule_on_time_is_healthy(pg15, vtt, tmp_path, schedule, age, status):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(vtt), backup_dir, BACKUP_SCHEDULE_FULL=schedule)
    backup = cli.create(env, "full")
    redate(backup_dir, backup, -age)
    report = json.loads(cli.run(["health", "--json"], env, check=False).stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["age:full"]["status"] == status, checks["age:full"]
    assert checks["age:full"]["newest"] == backup["id"]
    # the metrics every run writes (logs/seawall_pgbackup.prom) carry the same interval
    with open(os.path.join(str(backup_dir), "logs", "seawall_pgbackup.prom"), encoding="utf-8") as handle:
        lines = [ln for ln in handle
                 if ln.startswith("seawall_backup_schedule_interval_seconds{") and 'kind="full"' in ln]
    wanted = 92 * 86400 if schedule.startswith("0 3") else 366 * 86400
    assert len(lines) == 1 and lines[0].split()[-1] == str(wanted), lines
