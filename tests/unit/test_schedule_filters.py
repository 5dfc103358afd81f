"""The filters behind the tooling and schedule roles: schedule_jobs, backup_config, database_url_parts,
cron_to_win_triggers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.seawall.pgbackup.plugins.filter.backup_config import backup_config  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.filter.cron_to_win_triggers import cron_to_win_triggers  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.filter.database_url_parts import database_url_parts  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.filter.schedule_jobs import schedule_jobs  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.settings import (apply_json,
    default_config)  # noqa: E402

DEFAULTS = {"full": "0 2 * * *", "base": "30 1 * * *", "incremental": "0 * * * *", "schema": "0 3 * * 1", "data": "",
            "globals": "", "cleanup": "0 3 * * 0", "verify": "30 3 * * *", "health": "*/15 * * * *"}
PRODUCTION = {"backup": {
    "types": {"full": {"schedule": "0 2 * * *", "compression": True, "encryption": True,
                       "retention": {"daily": 7, "weekly": 4, "monthly": 12}},
              "incremental": {"schedule": "0 * * * *", "retention": {"hourly": 24, "daily": 7}}},
    "destinations": {"local": {"enabled": True}, "s3": {"enabled": True, "encryption": True}},
    "monitoring": {"alerts": {"enabled": True}, "healthChecks": {"enabled": True}}}}
DEVELOPMENT = {"backup": {"types": {"full": {"schedule": "0 6 * * *", "retention": {"daily": 3}},
                                    "incremental": {"enabled": False}},
                          "destinations": {"local": {"enabled": True}, "s3": {"enabled": False}}}}


def enabled(jobs):
    return {j["name"]: j["schedule"] for j in jobs if j["enabled"]}


def test_defaults():
    jobs = schedule_jobs(DEFAULTS)
    names = ["full", "base", "incremental", "schema", "data", "globals", "cleanup", "verify", "health"]
    assert [j["name"] for j in jobs] == names
    assert enabled(jobs) == {"full": "0 2 * * *", "schema": "0 3 * * 1", "cleanup": "0 3 * * 0",
                             "verify": "30 3 * * *", "health": "*/15 * * * *"}
    by_name = {j["name"]: j for j in jobs}
    assert by_name["full"]["arguments"] == ["create", "--type", "full"] and by_name["full"]["kind"] == "full"
    assert by_name["verify"]["arguments"] == ["verify", "latest", "--level", "archive"]
    assert by_name["health"]["arguments"] == ["health"] and not by_name["health"]["locks"]
    assert by_name["cleanup"]["locks"]


def test_incremental_only_when_allowed():
    assert "incremental" not in enabled(schedule_jobs(DEFAULTS, config=PRODUCTION))
    assert enabled(schedule_jobs(DEFAULTS, config=PRODUCTION, incremental=True))["incremental"] == "0 * * * *"


def test_base_only_when_allowed_and_taken_by_create():
    assert "base" not in enabled(schedule_jobs(DEFAULTS, config=PRODUCTION, incremental=True))
    jobs = {j["name"]: j for j in schedule_jobs(DEFAULTS, base=True, incremental=True)}
    assert jobs["base"]["enabled"] and jobs["base"]["schedule"] == "30 1 * * *" and jobs["base"]["locks"]
    assert jobs["base"]["arguments"] == ["create", "--type", "base"] and jobs["base"]["kind"] == "base"
    assert jobs["incremental"]["arguments"] == ["create", "--type", "incremental"]
    # The users' configuration can still turn it off.
    config = {"backup": {"types": {"base": {"enabled": False}}}}
    assert "base" not in enabled(schedule_jobs(DEFAULTS, config=config, base=True))


def test_users_configuration_wins():
    jobs = enabled(schedule_jobs(DEFAULTS, config=DEVELOPMENT))
    assert jobs["full"] == "0 6 * * *"
    config = {"backup": {"types": {"schema": {"enabled": "false"}}, "cleanup": {"schedule": "0  4 * * 6"},
                         "monitoring": {"healthChecks": {"enabled": False}}}}
    jobs = enabled(schedule_jobs(DEFAULTS, config=config))
    assert "schema" not in jobs and "health" not in jobs and jobs["cleanup"] == "0 4 * * 6"


@pytest.mark.parametrize("schedules, config, message", [
    ({"full": "0 2 * *"}, {}, "job full (pgbackup_schedule_full)"),
    ({"nightly": "0 2 * * *"}, {}, "unknown job(s) nightly"),
    ({"full": 2}, {}, "must be a cron string"),
    (DEFAULTS, {"backup": {"types": {"schema": {"schedule": "61 * * * *"}}}}, "config backup.types.schema.schedule"),
    (DEFAULTS, {"backup": {"types": {"full": {"enabled": "maybe"}}}}, "use true or false"),
    (DEFAULTS, {"backup": {"types": []}}, "config.backup.types must be a dictionary"),
])
def test_invalid(schedules, config, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        schedule_jobs(schedules, config=config)


def test_backup_config_is_what_the_engine_reads():
    jobs = schedule_jobs(dict(DEFAULTS, schema=""), config=PRODUCTION)
    document = backup_config(PRODUCTION, jobs, directory="/var/backups/postgresql", timezone="Europe/Berlin",
                             compression="zstd", database_url="postgresql://backup@db:5432/vtt")
    backup = document["backup"]
    assert backup["types"]["full"]["retention"] == {"daily": 7, "weekly": 4, "monthly": 12}
    assert backup["types"]["full"]["enabled"] is True and backup["types"]["full"]["schedule"] == "0 2 * * *"
    assert backup["types"]["incremental"]["enabled"] is False
    assert backup["types"]["schema"] == {"enabled": False}
    assert backup["destinations"]["s3"] == {"enabled": True, "encryption": True}
    assert PRODUCTION["backup"]["types"]["full"].get("enabled") is None  # the input is not changed
    cfg = default_config()
    apply_json(cfg, document, "test")
    assert cfg.backup_dir == "/var/backups/postgresql" and cfg.timezone == "Europe/Berlin" and cfg.compression == "zstd"
    assert cfg.database_url == "postgresql://backup@db:5432/vtt"
    assert [k for k, s in cfg.kinds.items() if s.enabled and s.schedule] == ["full"]


def test_backup_config_refuses_passwords():
    jobs = schedule_jobs(DEFAULTS)
    with pytest.raises(AnsibleFilterError, match="holds a password"):
        backup_config({}, jobs, database_url="postgresql://backup:secret@db/vtt")
    with pytest.raises(AnsibleFilterError, match="holds a password"):
        backup_config({"backup": {"databaseUrl": "postgresql://backup:secret@db/vtt"}}, jobs)
    with pytest.raises(AnsibleFilterError, match="unknown top-level"):
        backup_config({"types": {}}, jobs)


def test_database_url_parts():
    parts = database_url_parts("postgresql://backup:p%40ss%3Aw%5Cd@db.example:5433/high%20seas?sslmode=require")
    assert parts == {"url": "postgresql://backup@db.example:5433/high%20seas?sslmode=require", "user": "backup",
                     "password": "p@ss:w\\d", "host": "db.example", "port": 5433, "dbname": "high seas",
                     "pgpass": "db.example:5433:*:backup:p@ss\\:w\\\\d"}
    socket = database_url_parts("postgresql://backup@/vtt", password="vault")
    assert socket["pgpass"] == "localhost:5432:*:backup:vault" and socket["url"] == "postgresql://backup@/vtt"
    assert database_url_parts("postgres://backup@db/vtt")["pgpass"] == ""
    raw = database_url_parts("postgresql://backup:p#s?s@w: x@[::1]:5433/vtt")  # parsed like the engine, as libpq does
    assert (raw["url"], raw["password"], raw["host"], raw["port"]) == ("postgresql://backup@[::1]:5433/vtt",
                                                                       "p#s?s@w: x", "::1", 5433)


@pytest.mark.parametrize("url", ["mysql://a@b/c", "", "postgresql://:pw@db/vtt", "postgresql://a@db:99999/c",
                                 "postgresql://a@db/c'; rm"])
def test_database_url_parts_invalid_without_echoing(url):
    with pytest.raises(AnsibleFilterError) as info:
        database_url_parts(url)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize("expression, triggers", [
    ("0 2 * * *", [{"type": "daily", "start_boundary": "2026-01-01T02:00:00"}]),
    ("30 3 * * *", [{"type": "daily", "start_boundary": "2026-01-01T03:30:00"}]),
    ("0 3 * * 1", [{"type": "weekly", "days_of_week": "monday", "weeks_interval": 1,
                    "start_boundary": "2026-01-01T03:00:00"}]),
    ("0 3 * * 7", [{"type": "weekly", "days_of_week": "sunday", "weeks_interval": 1,
                    "start_boundary": "2026-01-01T03:00:00"}]),
    ("0 1 * * mon-fri", [{"type": "weekly", "days_of_week": "monday,tuesday,wednesday,thursday,friday",
                          "weeks_interval": 1, "start_boundary": "2026-01-01T01:00:00"}]),
    ("0 * * * *", [{"type": "daily", "start_boundary": "2026-01-01T00:00:00",
                    "repetition": {"interval": "PT1H", "duration": "P1D", "stop_at_duration_end": False}}]),
    ("@hourly", [{"type": "daily", "start_boundary": "2026-01-01T00:00:00",
                  "repetition": {"interval": "PT1H", "duration": "P1D", "stop_at_duration_end": False}}]),
    ("*/15 * * * *", [{"type": "daily", "start_boundary": "2026-01-01T00:00:00",
                       "repetition": {"interval": "PT15M", "duration": "P1D", "stop_at_duration_end": False}}]),
    ("*/30 9 * * *", [{"type": "daily", "start_boundary": "2026-01-01T09:00:00",
                       "repetition": {"interval": "PT30M", "duration": "PT1H", "stop_at_duration_end": False}}]),
    ("0 2,14 * * *", [{"type": "daily", "start_boundary": "2026-01-01T02:00:00"},
                      {"type": "daily", "start_boundary": "2026-01-01T14:00:00"}]),
])
def test_win_triggers(expression, triggers):
    assert cron_to_win_triggers(expression) == triggers


def test_win_triggers_random_delay_and_date():
    assert cron_to_win_triggers("0 2 * * *", start_date="2030-06-01", random_delay="5m") == [
        {"type": "daily", "start_boundary": "2030-06-01T02:00:00", "random_delay": "PT5M"}]
    assert cron_to_win_triggers("0 2 * * *", random_delay=90)[0]["random_delay"] == "PT90S"
    assert "random_delay" not in cron_to_win_triggers("0 2 * * *", random_delay="0")[0]


@pytest.mark.parametrize("expression, message", [
    ("0 4 1 * *", "a day of the month is not supported"),
    ("0 4 * 6 *", "a month is not supported"),
    ("@reboot", "unsupported macro"),
    ("5,10,15 0-22 * * *", "need more than 48 triggers"),
    ("0 2 * *", "use 5 fields"),
])
def test_win_triggers_unsupported(expression, message):
    with pytest.raises(AnsibleFilterError, match=message):
        cron_to_win_triggers(expression)
