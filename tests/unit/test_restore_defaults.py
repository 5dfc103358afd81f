"""The one with_globals rule of restore, verify and drill, and the documented defaults of the front ends against it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from seawall_pgbackup.cli.main import _parser
from seawall_pgbackup.config.settings import Config
from seawall_pgbackup.ops.verify import DEFAULT_KIND, DEFAULT_LEVEL, check_settings, globals_default, server_of

MODULES = Path(__file__).resolve().parents[2] / "plugins" / "modules"
SOURCE = "postgresql://backup:secret@db1.internal:5432/vtt"


def _cfg(database_url=SOURCE, probes=()):
    cfg = Config()
    cfg.database_url = database_url
    cfg.verify_probes = list(probes)
    return cfg


@pytest.mark.parametrize("database_url,target_url,given,expected", [
    (SOURCE, None, None, False),  # the source's own server has the roles
    (SOURCE, "postgresql://backup@db1.internal:5432/copy", None, False),
    (SOURCE, "postgresql://backup@db2.internal:5432/postgres", None, True),  # another cluster lacks them
    (SOURCE, "postgresql://backup@db1.internal:5433/postgres", None, True),  # another port: another cluster
    (None, "postgresql://backup@db2.internal:5432/postgres", None, False),  # no source to compare with
    (SOURCE, "postgresql://backup@db2.internal:5432/postgres", False, False),  # given wins
    (SOURCE, None, True, True),
])
def test_roles_first_only_on_another_server_unless_given(database_url, target_url, given, expected):
    cfg = _cfg(database_url)
    assert globals_default(cfg, server_of(cfg, target_url), given) is expected
    assert check_settings(cfg, target_url, None, given)[2] is expected


def test_probes_default_to_the_configuration_and_an_empty_list_means_none():
    cfg = _cfg(probes=["SELECT true"])
    assert check_settings(cfg)[1] == ["SELECT true"]
    assert check_settings(cfg, probes=[])[1] == []
    assert check_settings(cfg, probes=["SELECT 1 = 1"])[1] == ["SELECT 1 = 1"]


def test_a_target_borrows_the_source_password_only_for_the_same_user_and_server():
    cfg = _cfg()
    same = server_of(cfg, "postgresql://backup@db1.internal:5432/postgres")
    other = server_of(cfg, "postgresql://admin@db1.internal:5432/postgres")
    assert same._password == "secret" and other._password is None  # pylint: disable=protected-access


def _options(module):
    text = (MODULES / ("%s.py" % module)).read_text(encoding="utf-8")
    doc = re.search(r"DOCUMENTATION = r'''(.*?)'''", text, re.S).group(1)
    return yaml.safe_load(doc)["options"]


def test_documented_defaults_are_the_engine_defaults():
    verify = _options("pg_backup_verify")
    assert verify["level"]["default"] == DEFAULT_LEVEL and verify["type"]["default"] == DEFAULT_KIND
    # Unset: decided by the engine, so no front end may carry its own default.
    for module in ("pg_backup_verify", "pg_backup_restore"):
        options = _options(module)
        for name in ("with_globals", "jobs", "probes"):
            if name in options:
                assert "default" not in options[name], (module, name)
    parser = _parser()
    for argv in (["verify"], ["drill"], ["restore"]):
        args = parser.parse_args(argv)
        assert args.with_globals is None, argv
        assert getattr(args, "level", None) is None and getattr(args, "jobs", None) is None, argv
