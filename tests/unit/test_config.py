"""Configuration: the users' environment variables and JSON shape, and one-line errors."""

from __future__ import annotations

import json

import pytest

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError

URL = "postgresql://app:s3cret@db.example.internal:5432/highseas"


def test_defaults_follow_the_strategy_document():
    cfg = load_config(env={})
    assert cfg.backup_dir == "./backups"
    assert cfg.backup_type == "full"
    assert cfg.compression == "gzip"
    assert cfg.encryption is False
    assert cfg.kinds["full"].schedule == "0 2 * * *"
    assert cfg.kinds["incremental"].schedule == "0 * * * *"
    assert cfg.kinds["schema"].schedule == "0 3 * * 1"
    assert cfg.cleanup_schedule == "0 3 * * 0"
    assert cfg.kinds["full"].retention == {"daily": 7, "weekly": 4, "monthly": 12}
    assert cfg.kinds["incremental"].retention == {"hourly": 24, "daily": 7}
    assert cfg.kinds["schema"].retention == {"weekly": 8}
    assert cfg.kinds["data"].schedule is None


def test_environment_variables_of_the_users():
    cfg = load_config(env={
        "DATABASE_URL": URL, "BACKUP_DIR": "/srv/backups", "BACKUP_TYPE": "schema", "BACKUP_COMPRESSION": "false",
        "BACKUP_ENCRYPTION": "false", "BACKUP_RETENTION_DAILY": "3", "BACKUP_RETENTION_WEEKLY": "2",
        "BACKUP_RETENTION_MONTHLY": "6", "BACKUP_SCHEDULE_FULL": "0 6 * * *",
        "BACKUP_SCHEDULE_INCREMENTAL": "*/30 * * * *", "BACKUP_SCHEDULE_CLEANUP": "0 4 * * 0"})
    assert cfg.database_url == URL
    assert cfg.backup_dir == "/srv/backups"
    assert cfg.backup_type == "schema"
    assert cfg.compression == "none"
    assert cfg.kinds["full"].retention == {"daily": 3, "weekly": 2, "monthly": 6}
    assert cfg.kinds["full"].schedule == "0 6 * * *"
    assert cfg.kinds["incremental"].schedule == "*/30 * * * *"
    assert cfg.cleanup_schedule == "0 4 * * 0"


@pytest.mark.parametrize("value,expected", [("true", "gzip"), ("TRUE", "gzip"), ("1", "gzip"), ("gzip", "gzip"),
                                            ("zstd", "zstd"), ("false", "none"), ("none", "none")])
def test_compression_values(value, expected):
    assert load_config(env={"BACKUP_COMPRESSION": value}).compression == expected


@pytest.mark.parametrize("env,message", [
    ({"BACKUP_TYPE": "hourly"},
     "BACKUP_TYPE='hourly' is not valid: use one of full, schema, data, globals, base, incremental"),
    ({"BACKUP_COMPRESSION": "maybe"}, "BACKUP_COMPRESSION='maybe' is not valid: use true, false, gzip, zstd or none"),
    ({"BACKUP_ENCRYPTION": "sometimes"}, "BACKUP_ENCRYPTION='sometimes' is not valid: use true or false"),
    ({"BACKUP_RETENTION_DAILY": "-1"}, "BACKUP_RETENTION_DAILY='-1' is not valid: use a whole number >= 0"),
    ({"BACKUP_RETENTION_WEEKLY": "four"}, "BACKUP_RETENTION_WEEKLY='four' is not valid: use a whole number >= 0"),
    ({"BACKUP_SCHEDULE_FULL": "0 25 * * *"},
     "BACKUP_SCHEDULE_FULL='0 25 * * *' is not valid: use a 5-field cron expression such as '0 2 * * *'"),
    ({"BACKUP_SCHEDULE_FULL": "daily"},
     "BACKUP_SCHEDULE_FULL='daily' is not valid: use a 5-field cron expression such as '0 2 * * *'"),
])
def test_bad_environment_values_get_one_line_naming_key_and_value(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_bad_url_never_echoes_the_secret():
    with pytest.raises(ConfigError) as err:
        load_config(env={"DATABASE_URL": "mysql://root:hunter2@db/app"})
    assert "hunter2" not in str(err.value)
    assert "DATABASE_URL" in str(err.value)


PRODUCTION = {
    "backup": {
        "types": {
            "full": {"schedule": "0 2 * * *", "compression": True, "encryption": True,
                     "retention": {"daily": 7, "weekly": 4, "monthly": 12}},
            "incremental": {"schedule": "0 * * * *", "retention": {"hourly": 24, "daily": 7}},
        },
        "destinations": {"local": {"enabled": True}, "s3": {"enabled": True, "encryption": True}},
        "monitoring": {"alerts": {"enabled": True}, "healthChecks": {"enabled": True}},
    }
}
DEVELOPMENT = {
    "backup": {
        "types": {"full": {"schedule": "0 6 * * *", "retention": {"daily": 3}}, "incremental": {"enabled": False}},
        "destinations": {"local": {"enabled": True}, "s3": {"enabled": False}},
    }
}


def test_strategy_examples_load(tmp_path):
    prod = tmp_path / "prod.json"
    prod.write_text(json.dumps(PRODUCTION))
    cfg = load_config(env={}, config_file=str(prod))
    assert cfg.encryption_for("full") is True
    assert cfg.compression_for("full") == "gzip"
    assert cfg.destinations["s3"]["enabled"] is True
    assert cfg.monitoring["alerts"]["enabled"] is True
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(DEVELOPMENT))
    cfg = load_config(env={}, config_file=str(dev))
    assert cfg.kinds["full"].schedule == "0 6 * * *"
    assert cfg.kinds["full"].retention["daily"] == 3
    assert cfg.kinds["incremental"].enabled is False


def test_environment_overrides_file_and_arguments_override_environment(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"backup": {"directory": "/from/file", "types": {"full": {"schedule": "0 6 * * *"}}}}))
    cfg = load_config(env={"BACKUP_CONFIG": str(path), "BACKUP_DIR": "/from/env"})
    assert cfg.backup_dir == "/from/env"
    assert cfg.kinds["full"].schedule == "0 6 * * *"
    cfg = load_config(env={"BACKUP_CONFIG": str(path), "BACKUP_DIR": "/from/env"}, overrides={"backup_dir": "/arg"})
    assert cfg.backup_dir == "/arg"


@pytest.mark.parametrize("document,message", [
    ({"backup": {"types": {"full": {"retention": {"daily": "x"}}}}},
     "backup.types.full.retention.daily='x' (in {path}) is not valid: use a whole number >= 0"),
    ({"backup": {"types": {"nightly": {}}}},
     "backup.types key='nightly' (in {path}) is not valid: use one of full, incremental, schema, data, globals, base"),
    ({"backup": {"types": {"full": {"retention": {"fortnightly": 2}}}}},
     "backup.types.full.retention.fortnightly=2 (in {path}) is not valid: use one of hourly, daily, weekly, monthly, "
     "yearly, keep_last, min_keep"),
    ({"backup": {"types": {"full": {"schedule": "often"}}}},
     "backup.types.full.schedule='often' (in {path}) is not valid: use a 5-field cron expression such as '0 2 * * *'"),
    ({"backup": {"destinations": {"s3": {"enabled": "perhaps"}}}},
     "backup.destinations.s3.enabled='perhaps' (in {path}) is not valid: use true or false"),
    ({"full": {}}, '{path} is not valid: expected an object {{"backup": {{...}}}}'),
])
def test_bad_json_values_name_the_key(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_file=str(path))
    assert str(err.value) == message.format(path=path)


def test_json_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"backup": {\n  "types": ,\n}}')
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_file=str(path))
    assert str(err.value).startswith("config file %s is not valid JSON: line 2" % path)


def test_public_view_hides_password():
    cfg = load_config(env={"DATABASE_URL": URL})
    assert "s3cret" not in json.dumps(cfg.public())
    assert cfg.public()["database_url"] == "postgresql://app@db.example.internal:5432/highseas"
