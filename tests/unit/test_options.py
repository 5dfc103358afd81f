"""The option table (config/options.py) against everything that is not derived from it.

Derived from the table: Config's defaults, the environment loop, the JSON file's plain keys and the overrides
(config/settings.py), pgbackup_common_argument_spec() and docs/configuration.md. Checked here against it: the
CLI parser, the doc fragment, the modules' DOCUMENTATION, README and docs/*.md, the engine's variable names,
the roles' defaults, the inventories' configurations and the users' strategy document's defaults.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_COLLECTIONS = str(ROOT / ".collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from seawall_pgbackup.cli.main import _parser  # noqa: E402
from seawall_pgbackup.config import destinations, encryption, options, settings  # noqa: E402
from seawall_pgbackup.config.options import BY_ENV, BY_NAME, OPTIONS  # noqa: E402
from seawall_pgbackup.config.settings import apply_json, default_config, load_config  # noqa: E402
from seawall_pgbackup.core.errors import ConfigError  # noqa: E402

ENGINE = ROOT / "plugins" / "module_utils" / "pgbackup"
DEST_TYPES = ("S3", "AZURE", "GCS", "LOCAL")


def _value(cfg, name: str) -> Any:
    parts = name.split(".")
    if parts[0] != "kinds":
        return getattr(cfg, name)
    kind = cfg.kinds[parts[1]]
    return kind.retention.get(parts[3]) if parts[2] == "retention" else getattr(kind, parts[2])


def _envs() -> Set[str]:
    """Every variable of the table, the destinations' ``BACKUP_<TYPE>_*`` expanded."""
    found = set()
    for option in OPTIONS:
        if option.env and "<TYPE>" in option.env:
            found.update(option.env.replace("<TYPE>", t) for t in DEST_TYPES)
        elif option.env:
            found.add(option.env)
    return found


def _literal(path: Path, name: str) -> str:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return node.value.value
        if isinstance(node, ast.ClassDef):
            for inner in node.body:
                if isinstance(inner, ast.Assign) and inner.targets[0].id == name:
                    return inner.value.value
    raise AssertionError("%s has no %s" % (path, name))


def _module_docs() -> Dict[str, Dict[str, Any]]:
    return {path.stem: yaml.safe_load(_literal(path, "DOCUMENTATION"))["options"]
            for path in sorted((ROOT / "plugins" / "modules").glob("pg_backup*.py"))}


# --------------------------------------------------------------------------- the table itself

def test_names_and_variables_are_unique():
    names = [o.name for o in OPTIONS]
    envs = [o.env for o in OPTIONS if o.env]
    modules = [o.module for o in OPTIONS if o.module] + [m for o in OPTIONS for m in o.modules]
    assert len(names) == len(set(names))
    assert len(envs) == len(set(envs))
    assert len(modules) == len(set(modules))


def test_every_setting_row_has_a_parser_and_a_valid_default():
    for option in OPTIONS:
        if option.parsed_by != "settings" or "<" in option.name:
            continue
        assert option.type in settings.PARSERS or option.type in ("count", "level"), option.name
        if option.default not in (None, []):
            assert settings.parse_option(option, option.name, option.default) == option.default, option.name


def test_defaults_are_the_configs():
    cfg = default_config()
    for option in OPTIONS:
        if option.parsed_by in ("settings", "encryption") and "<" not in option.name:
            assert _value(cfg, option.name) == option.default, option.name


def test_defaults_are_the_strategy_documents():
    """The users' strategy: full daily 02:00 (7 daily, 4 weekly, 12 monthly), incremental hourly (24 hourly,
    7 daily), schema Mondays 03:00 (8 weeks), cleanup Sundays 03:00 (BACKUP_SCHEDULE_CLEANUP), ./backups,
    BACKUP_TYPE full, compression on, encryption off."""
    cfg = default_config()
    assert {k: s.schedule for k, s in cfg.kinds.items() if s.schedule} == {
        "full": "0 2 * * *", "incremental": "0 * * * *", "schema": "0 3 * * 1"}
    assert cfg.cleanup_schedule == "0 3 * * 0"
    assert cfg.kinds["full"].retention == {"daily": 7, "weekly": 4, "monthly": 12}
    assert cfg.kinds["incremental"].retention == {"hourly": 24, "daily": 7}
    assert cfg.kinds["schema"].retention == {"weekly": 8}
    assert cfg.kinds["data"].retention == {}
    assert (cfg.backup_dir, cfg.backup_type, cfg.compression, cfg.encryption) == ("./backups", "full", "gzip", False)


# --------------------------------------------------------------------------- derived parsers behave per row

SAMPLES = {"url": "postgresql://backup@db.example:5432/vtt", "str": "/srv/backups", "optional_str": "/opt/pg/bin",
           "backup_type": "schema", "compression": "zstd", "level": "5", "count": "3", "bool": "true",
           "timezone": "Europe/Berlin", "cron": "5 4 * * *", "job_cron": "5 4 * * *", "duration": "2h",
           "encryption_mode": "age",
           "key_path": "/etc/seawall/key", "recipients": "age1" + "q" * 58,
           "signers": "ed25519:" + "A" * 43 + "=", "key_ids": "5e2abbef7ea476f9", "repository_id": "vtt-eu-1",
           "slot_name": "pgbackup_eu_1"}
EXPECTED = {"level": 5, "count": 3, "bool": True, "recipients": ["age1" + "q" * 58],
            "signers": ["ed25519:" + "A" * 43 + "="], "key_ids": ["5e2abbef7ea476f9"]}
ENV_ROWS = [o for o in OPTIONS if o.env and o.parsed_by in ("settings", "encryption")]


@pytest.mark.parametrize("option", ENV_ROWS, ids=lambda o: o.env)
def test_every_variable_of_the_table_is_read(option):
    cfg = load_config(env={option.env: SAMPLES[option.type]})
    assert _value(cfg, option.name) == EXPECTED.get(option.type, SAMPLES[option.type])
    # empty means unset
    assert _value(load_config(env={option.env: ""}), option.name) == _value(default_config(), option.name)


@pytest.mark.parametrize("option", [o for o in ENV_ROWS if o.type not in ("str", "optional_str", "key_path")],
                         ids=lambda o: o.env)
def test_a_wrong_variable_is_named(option):
    with pytest.raises(ConfigError, match=re.escape(option.env)):
        load_config(env={option.env: "not a valid value: %"})


def test_the_json_file_keys_are_the_tables():
    assert sorted(options.json_keys()) == sorted(
        ["types", "destinations", "monitoring", "directory", "pgBinDir", "timezone", "compression",
         "compressionLevel", "encryption", "jobs", "cleanup", "databaseUrl", "verify", "repository", "wal"])
    with pytest.raises(ConfigError, match="backup.retention.*unknown key; known: cleanup, compression"):
        apply_json(default_config(), {"backup": {"retention": {}}}, "f.json")
    assert encryption.JSON == {"enabled": "encryption", "mode": "encryption_mode", "keyFile": "encryption_key_file",
                               "keyring": "encryption_keyring", "recipients": "encryption_recipients",
                               "identityFile": "encryption_identity_file",
                               "signingKeyFile": "encryption_signing_key_file",
                               "trustedSigners": "encryption_trusted_signers", "retiredKeys": "encryption_retired_keys"}


JSON_SAMPLES = dict(SAMPLES, level=5, count=3, bool=True, probes=["select true"], recipients=["age1" + "q" * 58],
                    signers=["ed25519:" + "A" * 43 + "="], key_ids=["5e2abbef7ea476f9"])
JSON_ROWS = [o for o in OPTIONS if o.json and "<" not in o.json and o.parsed_by in ("settings", "encryption")
             and o.name != "encryption"]


@pytest.mark.parametrize("option", JSON_ROWS, ids=lambda o: o.json)
def test_every_plain_json_key_is_read(option):
    document: Dict[str, Any] = {}
    cursor = document
    *parents, last = option.json.split(".")
    for part in parents:
        cursor = cursor.setdefault(part, {})
    cursor[last] = JSON_SAMPLES[option.type]
    cfg = default_config()
    apply_json(cfg, {"backup": document}, "f.json")
    assert _value(cfg, option.name) == EXPECTED.get(option.type, JSON_SAMPLES[option.type])


def test_overrides_are_the_tables_top_level_settings():
    cfg = load_config(env={}, overrides={"backup_type": "data", "jobs": 4, "timezone": "UTC", "encryption": True,
                                         "encryption_mode": "age", "pg_bin_dir": "/opt/pg"})
    assert (cfg.backup_type, cfg.jobs, cfg.encryption, cfg.encryption_mode, cfg.pg_bin_dir) == (
        "data", 4, True, "age", "/opt/pg")
    with pytest.raises(ConfigError, match="type='full-ish' is not valid"):
        load_config(env={}, overrides={"backup_type": "full-ish"})
    for key in ("config_file", "kinds.full.schedule", "nonsense"):
        with pytest.raises(ConfigError, match="unknown setting"):
            load_config(env={}, overrides={key: "x"})


def test_the_generated_documentation_is_current():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == options.render_markdown(), (
        "docs/configuration.md is stale: python -m seawall_pgbackup.config.options --markdown > docs/configuration.md")


# --------------------------------------------------------------------------- modules

FRAGMENTS = ROOT / "plugins" / "doc_fragments" / "common.py"
# Modules that take no backup: they read the repository, and the shared fragments describe settings their way.
READERS = ("pg_backup_health", "pg_backup_info", "pg_backup_restore", "pg_backup_retention", "pg_backup_verify")
UNUSED = "Not used"  # how a module documents a shared option it accepts (module_defaults) but does not use


def _fragment_names() -> List[str]:
    """The attributes of the fragment class: DOCUMENTATION and the named fragments."""
    tree = ast.parse(FRAGMENTS.read_text(encoding="utf-8"))
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    return [inner.targets[0].id for inner in cls.body if isinstance(inner, ast.Assign)]


def _documented(module: str) -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """Every option of ``module``'s documentation, fragments resolved: name -> (where, documentation)."""
    path = ROOT / "plugins" / "modules" / ("%s.py" % module)
    doc = yaml.safe_load(_literal(path, "DOCUMENTATION"))
    found: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for slug in doc.get("extends_documentation_fragment") or []:
        assert slug.startswith("seawall.pgbackup.common"), slug
        var = slug[len("seawall.pgbackup.common"):].lstrip(".").upper() or "DOCUMENTATION"
        for name, entry in yaml.safe_load(_literal(FRAGMENTS, var))["options"].items():
            assert name not in found, "%s: %s is documented twice (%s, %s)" % (module, name, found[name][0], var)
            found[name] = (var, entry)
    for name, entry in doc["options"].items():
        assert name not in found, "%s: %s is documented twice (%s and the module)" % (module, name, found[name][0])
        found[name] = ("module", entry)
    return found


def _shared_text(module: str) -> str:
    """The descriptions of ``module``'s shared options and its whole DOCUMENTATION, as one text."""
    from ansible_collections.seawall.pgbackup.plugins.module_utils.common import pgbackup_common_argument_spec

    documented = _documented(module)
    path = ROOT / "plugins" / "modules" / ("%s.py" % module)
    return " ".join([_literal(path, "DOCUMENTATION")] + [" ".join(documented[name][1]["description"])
                                                         for name in pgbackup_common_argument_spec()])


@pytest.mark.parametrize("module", ["pg_backup"] + list(READERS))
def test_the_common_argument_spec_is_the_doc_fragments(module):
    """Every module accepts every shared option (the action group's module_defaults passes them all) and documents
    each once, as the argument spec has it; one it uses names its variable and JSON key, one it does not says so."""
    from ansible_collections.seawall.pgbackup.plugins.module_utils.common import pgbackup_common_argument_spec

    spec = pgbackup_common_argument_spec()
    documented = _documented(module)
    for name, entry in spec.items():
        assert name in documented, "%s does not document %s" % (module, name)
        where, doc = documented[name]
        option = next(o for o in OPTIONS if o.module == name)
        assert entry["type"] == doc["type"] == option.module_type, (module, name)
        assert entry.get("elements") == doc.get("elements"), (module, name)
        assert entry.get("choices") == doc.get("choices"), (module, name)
        assert "default" not in doc and "default" not in entry, "%s: a default would hide %s" % (name, option.env)
        for choice in doc.get("choices") or []:
            settings.apply_encryption_setting(default_config(), option.name, choice)  # the engine accepts it
        if option.module_fallback:
            assert entry["fallback"][1] == [option.env], name
        text = " ".join(doc["description"])
        if text.startswith(UNUSED):
            assert "module_defaults" in text, "%s.%s: say why an unused option is accepted" % (module, name)
            continue
        if option.env:
            assert "E(%s)" % option.env in text, "%s.%s (%s) should name %s" % (module, name, where, option.env)
        if option.json:
            assert "C(backup.%s)" % option.json in text, "%s.%s (%s) should name backup.%s" % (
                module, name, where, option.json)
    assert spec["database_url"]["no_log"] is True
    assert pgbackup_common_argument_spec() is not spec  # a fresh dict per call


def test_every_fragment_is_used():
    used = set()
    for path in (ROOT / "plugins" / "modules").glob("pg_backup*.py"):
        used.update(yaml.safe_load(_literal(path, "DOCUMENTATION")).get("extends_documentation_fragment") or [])
    names = {"seawall.pgbackup.common" + ("" if var == "DOCUMENTATION" else "." + var.lower())
             for var in _fragment_names()}
    assert names == used


@pytest.mark.parametrize("module", READERS)
def test_modules_that_take_no_backup_document_the_shared_options_as_readers(module):
    """Issue #13: the one shared fragment told restore it took "the database to back up", and showed the read-only
    modules the settings of new backups as if they applied."""
    documented = _documented(module)
    assert documented["encryption"][0] == "TRUST", module  # what is trusted, not "encrypt new backups"
    assert not re.search(r"\bto back up\b|\bbacked up\b", _shared_text(module)), module
    write_side = {"encryption_mode", "encryption_retired_keys"}
    if module == "pg_backup_health":  # the keys check: which keys new backups use, which are retired
        assert all(not " ".join(documented[n][1]["description"]).startswith(UNUSED) for n in write_side)
    else:
        for name in write_side:
            assert " ".join(documented[name][1]["description"]).startswith(UNUSED), (module, name)
    connects = module not in ("pg_backup_info", "pg_backup_retention")
    for name in ("database_url", "pg_bin_dir"):
        assert " ".join(documented[name][1]["description"]).startswith(UNUSED) is not connects, (module, name)


def test_the_backup_module_documents_the_write_side():
    documented = _documented("pg_backup")
    assert documented["encryption"][0] == "ENCRYPTION"
    assert "database to back up" in " ".join(documented["database_url"][1]["description"])
    assert not " ".join(documented["encryption_mode"][1]["description"]).startswith(UNUSED)


# Module options that set a table setting yet have an argspec default, so the setting's environment variable
# never applies through that module. Known drift, reported to the modules' owners (not fixed here):
MODULE_DEFAULT_EXCEPTIONS: Dict[str, str] = {}  # none: an unset option leaves the engine's order in charge

# Module options that are not settings: which backup, which server, what to do, how to report.
MODULE_NOT_SETTINGS = {
    "pg_backup": {"max_age", "force"},
    "pg_backup_health": {"fail_on", "connect"},
    "pg_backup_info": {"type", "database", "newest_only", "include_bad"},
    "pg_backup_restore": {"backup", "type", "before", "target_url", "replace", "force", "with_globals", "tables",
                          "schemas", "keep_going", "pgdata", "recovery_target", "recovery_target_time",
                          "recovery_target_lsn", "recovery_target_xid", "recovery_target_name"},
    "pg_backup_retention": {"policy", "lock_wait"},
    "pg_backup_verify": {"backup", "type", "level", "target_url", "with_globals", "max_age", "drill"},
}


def test_modules_options_that_are_settings_are_in_the_table():
    docs = _module_docs()
    mapped = {m: o for o in OPTIONS for m in o.modules}
    shared = {o.module for o in OPTIONS if o.module}  # documented per module, checked above
    for module, opts in docs.items():
        for name, doc in opts.items():
            key = "%s.%s" % (module, name)
            if name in shared:
                continue
            if name in MODULE_NOT_SETTINGS.get(module, set()):
                assert key not in mapped, key
                continue
            assert key in mapped, "%s is a setting missing from config/options.py (or list it as not one)" % key
            option = mapped[key]
            if "default" in doc and doc["default"] is not None and option.env:
                assert key in MODULE_DEFAULT_EXCEPTIONS, "%s has a default: %s would never apply" % (key, option.env)
            for choice in doc.get("choices") or []:
                settings.parse_option(option, key, choice)  # every choice is a value the engine accepts
    for key in mapped:
        module, name = key.split(".")
        assert name in docs[module], "%s: no such module option" % key


# --------------------------------------------------------------------------- the command line

# Command-line options that are not settings: which backup, which server, what to do, how to print.
CLI_NOT_SETTINGS = {
    "create": {"--json", "--dry-run"},
    "list": {"--type", "--database", "--json", "--destination", "--all"},
    "restore": {"--before", "--table", "--schema", "--target-url", "--type", "--clean", "--keep-going",
                "--with-globals", "--no-with-globals", "--json", "--destination", "--pgdata", "--target-time",
                "--target-lsn", "--target-xid", "--target-name", "--target-immediate", "--target-latest"},
    "verify": {"--level", "--type", "--target-url", "--with-globals", "--no-with-globals", "--json", "--destination",
               "--wal"},
    "drill": {"--target-url", "--with-globals", "--no-with-globals", "--json"},
    "cleanup": {"--dry-run", "--json", "--destination"},
    "sync": {"--destination", "--json", "--dry-run"},
    "health": {"--json"},
    "serve": set(),
    "schedule": {"--log-format", "--serve"},
    "rekey": {"--type", "--before", "--all", "--json", "--dry-run"},
    "keygen": {"--age", "--json", "--signing", "--output"},
    "wal-push": {"--json"},
    "wal-fetch": {"--destination", "--spool"},
    "wal-receive": {"--json"},
    "wal-prefetch-stop": set(),
}


def _cli() -> Tuple[Dict[str, argparse.Action], Dict[str, Dict[str, argparse.Action]]]:
    parser = _parser()
    top = {s: a for a in parser._actions for s in a.option_strings if s.startswith("--") and s not in ("--help",
                                                                                                       "--version")}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = {name: {s: a for a in sp._actions for s in a.option_strings if s.startswith("--")
                       and s not in top and s != "--help"} for name, sp in sub.choices.items()}
    return top, commands


def test_the_command_lines_options_are_the_tables():
    top, commands = _cli()
    declared = {c: o for o in OPTIONS for c in o.cli}
    assert set(CLI_NOT_SETTINGS) == set(commands), "a new command: list its options here"
    for flag in top:
        assert flag in declared, "%s is a setting missing from config/options.py" % flag
    for command, flags in commands.items():
        for flag in flags:
            key = "%s %s" % (command, flag)
            if flag in CLI_NOT_SETTINGS[command]:
                assert key not in declared, key
            else:
                assert key in declared, "%s is a setting missing from config/options.py (or list it as not one)" % key
    for key, option in declared.items():
        parts = key.split()
        action = top[parts[0]] if len(parts) == 1 else commands[parts[0]][parts[1]]
        text = action.help or ""
        # A help text naming a variable or a default names the table's.
        for variable in re.findall(r"\$([A-Z_]+)", text):
            assert variable == option.env, "%s: help names $%s, the table %s" % (key, variable, option.env)
        if "default:" in text and isinstance(option.default, str):
            assert option.default in text, "%s: help's default is not %s" % (key, option.default)


# --------------------------------------------------------------------------- documentation and other code

def _named_variables(text: str) -> Set[str]:
    found = set()
    for match in re.finditer(r"\b((?:BACKUP|DATABASE)_[A-Z0-9_]*[A-Z0-9])((?:/[A-Z0-9_]+)*)", text):
        first, more = match.group(1), match.group(2)
        found.add(first)
        if more:  # BACKUP_RETENTION_DAILY/WEEKLY/MONTHLY
            stem = first.rsplit("_", 1)[0]
            found.update("%s_%s" % (stem, word) for word in more.strip("/").split("/"))
    return found


@pytest.mark.parametrize("path", ["README.md"] + sorted("docs/" + p.name for p in (ROOT / "docs").glob("*.md")))
def test_every_variable_the_documentation_names_is_in_the_table(path):
    unknown = _named_variables((ROOT / path).read_text(encoding="utf-8")) - _envs()
    assert not unknown, "%s names variables the engine does not read: %s" % (path, sorted(unknown))


def test_the_readme_configuration_paragraph_lists_real_variables():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = text[text.index("Configuration, lowest precedence first"):text.index("## The backup directory")]
    assert {"DATABASE_URL", "BACKUP_DIR", "BACKUP_TYPE", "BACKUP_RETENTION_MONTHLY",
            "BACKUP_SCHEDULE_CLEANUP"} <= _named_variables(paragraph) <= _envs()
    assert "docs/configuration.md" in paragraph


def test_every_variable_the_engine_and_modules_name_is_in_the_table():
    named: Dict[str, str] = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        if path.name == "options.py":
            continue
        for variable in re.findall(r"[\"']((?:BACKUP|DATABASE)_[A-Z0-9_]*[A-Z0-9])[\"']", path.read_text("utf-8")):
            named[variable] = str(path.relative_to(ROOT))
    unknown = {v: p for v, p in named.items() if v not in _envs()}
    assert not unknown, unknown


def test_the_destination_variables_are_the_tables():
    table = {o.env.split("<TYPE>_", 1)[1]: o.json.rsplit(".", 1)[1] for o in OPTIONS
             if o.env and "<TYPE>" in o.env}
    assert table == destinations.ENV_KEYS
    for variable, key in destinations.COMMON_ENV.items():
        assert BY_ENV[variable].json == "destinations.<name>.%s" % key
    assert set(destinations.ENV_KEYS.values()) <= set(destinations.KNOWN_KEYS)


def test_the_monitoring_variables_are_the_tables():
    source = (ENGINE / "config" / "monitoring.py").read_text(encoding="utf-8")
    used = set(re.findall(r"\"(BACKUP_[A-Z_]+)\"", source))
    declared = {o.env for o in OPTIONS if o.parsed_by == "monitoring" and o.env}
    assert used == declared


# --------------------------------------------------------------------------- roles and inventories

ROLE_MIRRORS = {  # role variable -> table row; "" in a role means not scheduled (None in the engine)
    "pgbackup_schedule_full": "kinds.full.schedule",
    "pgbackup_schedule_incremental": "kinds.incremental.schedule",
    "pgbackup_schedule_schema": "kinds.schema.schedule",
    "pgbackup_schedule_data": "kinds.data.schedule",
    "pgbackup_schedule_globals": "kinds.globals.schedule",
    "pgbackup_schedule_cleanup": "cleanup_schedule",
    "pgbackup_timezone": "timezone",
}


@pytest.mark.parametrize("role", ["schedule", "tooling"])
def test_the_roles_defaults_mirror_the_engines(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8"))
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    spec_options = specs["argument_specs"]["main"]["options"]
    for variable, name in ROLE_MIRRORS.items():
        engine = BY_NAME[name].default
        assert (defaults[variable] or None) == engine, "%s: %r, engine %r" % (variable, defaults[variable], engine)
        assert spec_options[variable].get("default") == defaults[variable], variable


def _inventory_configs() -> List[Tuple[str, Any]]:
    found = []
    for path in sorted((ROOT / "inventories").glob("*/group_vars/*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if "pgbackup_config" in document:
            found.append((str(path.relative_to(ROOT)), document["pgbackup_config"]))
    return found


@pytest.mark.parametrize("path,document", _inventory_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_inventories_configurations_use_only_the_tables_keys(path, document):
    apply_json(default_config(), document, path)


def test_modules_default_to_an_absolute_backup_directory():
    """A module runs in Ansible's working directory, not the user's: its default is the roles' absolute path, the
    command keeps the users' ./backups; BACKUP_DIR and the JSON file still win for both."""
    assert load_config(env={}).backup_dir == "./backups"
    assert load_config(env={}, module=True).backup_dir == "/var/backups/postgresql"
    assert load_config(env={"BACKUP_DIR": "/srv/b"}, module=True).backup_dir == "/srv/b"
    assert BY_NAME["backup_dir"].module_default.startswith("/")
