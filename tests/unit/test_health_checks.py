"""Health checks at each threshold: checksums, disk space and its projection, last runs, the DR drill; monitoring config."""

from __future__ import annotations

import json
import os
from collections import namedtuple
from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.model.manifest import FORMAT_VERSION, Backup
from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.core.fsutil import write_json_atomic
from seawall_pgbackup.ops.health import health
from seawall_pgbackup.ops.health_checks import check_checksum, check_disk, check_drill, check_last_runs
from seawall_pgbackup.config.monitoring import HealthThresholds, load_monitoring
from seawall_pgbackup.codec.integrity import sha256_file
from seawall_pgbackup.model.runrecord import write_run

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
Usage = namedtuple("Usage", "total used free")
GIB = 1024 ** 3


def _backup(repo: Repository, kind: str = "full", age: timedelta = timedelta(hours=1), size: int = 1000) -> Backup:
    moment = NOW - age
    backup_id = repo.new_id(kind, "app", moment)
    path = os.path.join(repo.kind_dir(kind), backup_id + ".dump.gz")
    with open(path, "wb") as handle:
        handle.write(os.urandom(size))
    backup = Backup({"format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "status": "ok", "database": "app",
                     "created_at": iso(moment), "finished_at": iso(moment + timedelta(minutes=1)),
                     "files": [{"name": os.path.basename(path), "role": "database", "size": size,
                                "sha256": sha256_file(path)}]}, repo.manifest_path(kind, backup_id))
    backup.save()
    return backup


@pytest.fixture(name="repo")
def _repo(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    return repo


def test_checksum_ok_truncated_corrupted_missing(repo):
    backup = _backup(repo)
    assert check_checksum(backup, "full")["status"] == "ok"
    path = backup.file_path(backup.manifest.files[0])
    with open(path, "r+b") as handle:
        handle.seek(10)
        byte = handle.read(1)
        handle.seek(10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = check_checksum(backup, "full")
    assert result["status"] == "critical" and "does not match its sha256" in result["reason"]
    with open(path, "r+b") as handle:
        handle.truncate(5)
    assert "has 5 bytes, the manifest recorded 1000" in check_checksum(backup, "full")["reason"]
    os.unlink(path)
    assert "is missing" in check_checksum(backup, "full")["reason"]
    assert check_checksum(None, "schema") == {"check": "checksum:schema", "status": "critical",
                                              "reason": "no good schema backup to check"}


@pytest.mark.parametrize("free_gib,full_gib,status,room", [
    (50, None, "ok", None),          # 50 % free, no full yet: percent thresholds only
    (19.9, None, "warning", None),   # below 20 %
    (9.9, None, "critical", None),   # below 10 %
    (50, 10, "ok", 5),               # room for 5 fulls
    (50, 30, "warning", 1),          # room for 1 full: below minFreeFulls=2
    (50, 60, "critical", 0),         # not even one more full fits
    (15, 1, "warning", 15),          # plenty of fulls but below 20 %
])
def test_disk_thresholds_and_projection(tmp_path, free_gib, full_gib, status, room):
    usage = Usage(100 * GIB, int((100 - free_gib) * GIB), int(free_gib * GIB))
    result = check_disk(str(tmp_path), HealthThresholds(), full_gib * GIB if full_gib else None, usage=usage)
    assert result["status"] == status, result
    assert result.get("room_for_fulls") == room
    if room is not None:
        assert "room for %d more fulls" % room in result["reason"]


def test_disk_thresholds_from_config(tmp_path):
    limits = load_monitoring({"healthChecks": {"diskWarningPercent": 40, "diskCriticalPercent": 30, "minFreeFulls": 5}},
                             {}).health
    usage = Usage(100 * GIB, 65 * GIB, 35 * GIB)
    assert check_disk(str(tmp_path), limits, None, usage=usage)["status"] == "warning"
    assert check_disk(str(tmp_path), limits, 8 * GIB, usage=usage)["status"] == "warning"  # 4 < 5 fulls
    assert check_disk(str(tmp_path), limits, None, usage=Usage(100 * GIB, 71 * GIB, 29 * GIB))["status"] == "critical"


def test_last_runs(repo):
    limits = HealthThresholds(last_run_max_age_seconds=6 * 3600)
    assert check_last_runs(repo.log_dir, limits, NOW)["status"] == "ok"
    write_run(repo.log_dir, {"job": "create-full", "command": "create", "status": "ok",
                             "started_at": iso(NOW - timedelta(hours=2)), "finished_at": iso(NOW - timedelta(hours=2))})
    write_run(repo.log_dir, {"job": "health", "command": "health", "status": "critical",
                             "started_at": iso(NOW), "finished_at": iso(NOW)})  # health itself is not a run
    assert check_last_runs(repo.log_dir, limits, NOW)["status"] == "ok"
    write_run(repo.log_dir, {"job": "verify", "command": "verify", "status": "running",
                             "started_at": iso(NOW - timedelta(hours=7))})
    result = check_last_runs(repo.log_dir, limits, NOW)
    assert result["status"] == "warning" and "verify running since" in result["reason"]
    write_run(repo.log_dir, {"job": "create-schema", "command": "create", "status": "failed", "step": "connect",
                             "error": "cannot connect", "started_at": iso(NOW), "finished_at": iso(NOW)})
    result = check_last_runs(repo.log_dir, limits, NOW)
    assert result["status"] == "critical" and result["reason"].startswith("last create-schema run failed")
    assert "(step connect): cannot connect" in result["reason"]


@pytest.mark.parametrize("report,age,required,status", [
    (None, None, False, "ok"),
    (None, None, True, "warning"),
    ({"ok": True, "rto_seconds": 3.5}, timedelta(days=1), False, "ok"),
    ({"ok": True, "rto_seconds": 3.5}, timedelta(days=8, minutes=1), False, "warning"),
    ({"ok": False, "details": "row counts differ"}, timedelta(hours=1), False, "critical"),
])
def test_drill(repo, report, age, required, status):
    if report is not None:
        write_json_atomic(os.path.join(repo.log_dir, "drill-latest.json"),
                          dict(report, backup_id="full-app-x", finished_at=iso(NOW - age)))
    result = check_drill(repo.log_dir, HealthThresholds(drill_required=required), NOW)
    assert result["status"] == status, result


def test_health_aggregates_and_nagios_code(repo):
    cfg = load_config(env={"BACKUP_DIR": repo.root, "DATABASE_URL": "postgresql://u@h/app",
                           "BACKUP_SCHEDULE_SCHEMA": "0 3 * * 1"})
    cfg.kinds["schema"].enabled = False
    _backup(repo, "full", timedelta(hours=2))
    report = health(cfg, now=NOW, env={}, connect=False)
    assert report["status"] == "ok" and report["exit_code"] == 0, report
    assert [c["check"] for c in report["checks"]] == [
        "repository", "catalog", "age:full", "checksum:full", "clock-skew", "disk", "last-run", "drill"]
    write_json_atomic(os.path.join(repo.log_dir, "drill-latest.json"),
                      {"ok": True, "finished_at": iso(NOW - timedelta(days=30))})
    assert health(cfg, now=NOW, env={}, connect=False)["exit_code"] == 1
    write_run(repo.log_dir, {"job": "create-full", "command": "create", "status": "failed", "started_at": iso(NOW)})
    assert health(cfg, now=NOW, env={}, connect=False)["exit_code"] == 2


@pytest.mark.parametrize("block,env,message", [
    ({"alerts": {"email": {"host": "h", "from": "a@b", "to": ["x@y"], "security": "tls"}}}, {},
     "monitoring.alerts.email.security='tls' is not valid: use one of starttls, ssl, none"),
    ({"alerts": {"slack": {"enabled": True}}}, {},
     "monitoring.alerts.slack is enabled but has no webhook URL: set BACKUP_SLACK_WEBHOOK_URL"),
    ({}, {"BACKUP_DISCORD_WEBHOOK_URL": "ftp://discord/secret-token"},
     "monitoring.alerts.discord.webhookUrl is not valid: use an http:// or https:// URL"),
    ({"healthChecks": {"diskWarningPercent": 120}}, {},
     "monitoring.healthChecks.diskWarningPercent=120 is not valid: use a number from 0 to 100"),
    ({"healthChecks": {"drillMaxAge": "soon"}}, {},
     "monitoring.healthChecks.drillMaxAge='soon' is not valid: use seconds or a duration such as 30m, 20h, 2d or 1w"),
    ({"metrics": {"listen": "localhost"}}, {},
     "listen address 'localhost' is not valid: use HOST:PORT such as 127.0.0.1:9187"),
    ({"alerts": {"pager": {}}}, {}, "monitoring.alerts.pager={} is not valid: unknown key; known: enabled, onSuccess, "
                                    "onWarning, timeoutSeconds, email, slack, discord, webhooks"),
    ({"alerts": {"webhooks": [{"url": "http://h", "headers": {"X-A": "1\r\nX-B: 2"}}]}}, {},
     "monitoring.alerts.webhooks[0].headers.X-A='1\\r\\nX-B: 2' is not valid: expected a one-line string header value"),
])
def test_bad_monitoring_settings(block, env, message):
    with pytest.raises(ConfigError) as caught:
        load_monitoring(block, env)
    assert str(caught.value) == message
    assert "secret-token" not in str(caught.value)


def test_monitoring_from_env_and_json(tmp_path):
    settings = load_monitoring({"alerts": {"onSuccess": "false", "webhooks": [{"url": "https://a/x", "secretEnv": "MY_KEY"}]},
                                "deadMansSwitch": {"commands": ["create", "verify"]}},
                               {"BACKUP_SLACK_WEBHOOK_URL": "https://hooks.slack.test/T/B/x", "MY_KEY": "k",
                                "BACKUP_NOTIFY_ON_SUCCESS": "true", "BACKUP_DEADMANS_SWITCH_URL": "https://hc/uuid/",
                                "BACKUP_METRICS_DIR": str(tmp_path)})
    assert settings.channels == ["slack", "webhook"] and settings.on_success
    assert settings.webhooks[1].secret == "k" and settings.deadmans_url == "https://hc/uuid"
    assert settings.deadmans_commands == ["create", "verify"] and settings.textfile_dir == str(tmp_path)
    json.dumps(settings.channels)
