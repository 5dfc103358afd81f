# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration from the users' environment variables and their JSON file shape.

Precedence, lowest first: built-in defaults (the strategy document's), the JSON file
(``{"backup": {"types": ..., "destinations": ..., "monitoring": ...}}``), environment
variables, then explicit arguments (command-line options or module parameters).
Every rejected value gets one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..core.cron import Cron
from ..core.duration import parse_duration
from ..core.errors import ConfigError
from .encryption import apply_encryption_json, apply_encryption_setting
from .options import ALL_KINDS, BY_NAME, OPTIONS, Option, json_keys

LOGICAL_KINDS = ("full", "schema", "data", "globals")
# pg_basebackup of the whole cluster (ops/backup.py, ops/physical.py); incremental: a native link (pg_basebackup
# --incremental, 17+ with summarize_wal) or the WAL archived since its parent (ops/incremental.py)
PHYSICAL_KINDS = ("base", "incremental")
BACKUP_KINDS = LOGICAL_KINDS + PHYSICAL_KINDS  # what BACKUP_TYPE and --type take
COMPRESSIONS = ("gzip", "zstd", "none")
RETENTION_SLOTS = ("hourly", "daily", "weekly", "monthly", "yearly", "keep_last", "min_keep")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _kind_defaults(field_name: str) -> Dict[str, Dict[str, Any]]:
    """``{kind: {slot or field: default}}`` from the table's per-kind rows that have a default."""
    found: Dict[str, Dict[str, Any]] = {kind: {} for kind in ALL_KINDS}
    for option in OPTIONS:
        parts = option.name.split(".")
        if parts[0] == "kinds" and parts[1] in found and parts[2] == field_name and option.default is not None:
            found[parts[1]][parts[-1]] = option.default
    return found


# Derived from the option table (config/options.py), kept under their old names for their readers.
DEFAULT_SCHEDULES = dict({kind: value["schedule"] for kind, value in _kind_defaults("schedule").items() if value},
                         cleanup=BY_NAME["cleanup_schedule"].default)
DEFAULT_RETENTION = _kind_defaults("retention")


def _default(name: str) -> Any:
    return BY_NAME[name].default


@dataclass
class KindSettings:
    """Settings of one backup kind (full, incremental, schema, data, globals)."""

    enabled: bool = True
    schedule: Optional[str] = None
    retention: Dict[str, int] = field(default_factory=dict)
    compression: Optional[str] = None  # None: the global setting
    encryption: Optional[bool] = None


@dataclass
class Config:
    """Everything a run needs; secrets are kept here and never logged."""

    database_url: Optional[str] = _default("database_url")
    backup_dir: str = _default("backup_dir")
    backup_type: str = _default("backup_type")
    compression: str = _default("compression")
    compression_level: Optional[int] = _default("compression_level")
    encryption: bool = _default("encryption")
    encryption_mode: str = _default("encryption_mode")               # or "age" (docs/encryption.md)
    encryption_key_file: Optional[str] = _default("encryption_key_file")  # a 0600 key file outside the backup dir
    encryption_keyring: Optional[str] = _default("encryption_keyring")    # a directory of *.key files (rotation)
    encryption_recipients: List[str] = field(default_factory=list)  # age1... public keys
    encryption_identity_file: Optional[str] = _default("encryption_identity_file")  # age keys, restore side only
    encryption_signing_key_file: Optional[str] = _default("encryption_signing_key_file")  # Ed25519, signs manifests
    encryption_trusted_signers: List[str] = field(default_factory=list)  # ed25519:... public keys
    encryption_retired_keys: List[str] = field(default_factory=list)  # key ids still read, never written
    repository_id: str = _default("repository_id")
    accept_unsigned: bool = _default("accept_unsigned")
    accept_unencrypted: bool = _default("accept_unencrypted")
    pg_bin_dir: Optional[str] = _default("pg_bin_dir")
    wal_slot: str = _default("wal_slot")  # wal-receive's replication slot
    jobs: int = _default("jobs")
    wal_prefetch: int = _default("wal_prefetch")  # WAL segments recovery fetches ahead (ops/walprefetch.py)
    timezone: str = _default("timezone")
    kinds: Dict[str, KindSettings] = field(default_factory=dict)
    cleanup_schedule: Optional[str] = _default("cleanup_schedule")
    verify_schedule: Optional[str] = _default("verify_schedule")
    health_schedule: Optional[str] = _default("health_schedule")
    schedule_jitter: Any = _default("schedule_jitter")  # a duration as written: seconds or 5m ...
    schedule_grace: Any = _default("schedule_grace")
    destinations: Dict[str, Any] = field(default_factory=lambda: copy.deepcopy(_default("destinations")))
    monitoring: Dict[str, Any] = field(default_factory=dict)
    verify_probes: List[str] = field(default_factory=list)  # SQL that must return true after a test restore
    leftover_grace: Optional[Any] = _default("leftover_grace")  # a duration; None: cleanup's default (6 h)
    source: Dict[str, str] = field(default_factory=dict)  # key -> where its value came from
    destination_settings: Optional[List[Any]] = None  # storage.settings.DestinationSettings, set by load_config

    def compression_for(self, kind: str) -> str:
        return self.kinds[kind].compression or self.compression

    def encryption_for(self, kind: str) -> bool:
        own = self.kinds[kind].encryption
        return self.encryption if own is None else own

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set: give it in the environment or as backup.databaseUrl in the "
                              "configuration file", hint="database-url")
        return self.database_url

    def public(self) -> Dict[str, Any]:
        """A view safe to print or return from a module (no password)."""
        from .connection import redact_url  # local import: connection imports nothing of ours back

        return {
            "database_url": redact_url(self.database_url) if self.database_url else None,
            "backup_dir": self.backup_dir,
            "backup_type": self.backup_type,
            "compression": self.compression,
            "encryption": self.encryption,
            "encryption_mode": self.encryption_mode if self.encryption else None,
            "pg_bin_dir": self.pg_bin_dir,
            "timezone": self.timezone,
            "schedules": dict({k: s.schedule for k, s in self.kinds.items() if s.schedule}, cleanup=self.cleanup_schedule),
            "retention": {k: dict(s.retention) for k, s in self.kinds.items()},
            "enabled": {k: s.enabled for k, s in self.kinds.items()},
            "destinations": sorted(k for k, v in self.destinations.items() if isinstance(v, dict) and v.get("enabled")),
        }


def default_config() -> Config:
    cfg = Config()
    for kind in ALL_KINDS:
        cfg.kinds[kind] = KindSettings(schedule=DEFAULT_SCHEDULES.get(kind), retention=dict(DEFAULT_RETENTION[kind]))
    return cfg


# ----------------------------------------------------------------------------- validators

def _bad(key: str, value: Any, allowed: str, where: str = "") -> ConfigError:
    origin = " (in %s)" % where if where else ""
    return ConfigError("%s=%r%s is not valid: %s" % (key, value, origin, allowed))


def parse_bool(key: str, value: Any, where: str = "") -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _bad(key, value, "use true or false", where)


def parse_count(key: str, value: Any, where: str = "", minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise _bad(key, value, "use a whole number >= %d" % minimum, where)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _bad(key, value, "use a whole number >= %d" % minimum, where) from None
    if number < minimum:
        raise _bad(key, value, "use a whole number >= %d" % minimum, where)
    return number


def parse_kind(key: str, value: Any, where: str = "", allowed=BACKUP_KINDS) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise _bad(key, value, "use one of %s" % ", ".join(allowed), where)
    return text


def parse_compression(key: str, value: Any, where: str = "") -> str:
    """The users write ``true``/``false``; ``gzip``, ``zstd`` and ``none`` are accepted too."""
    if isinstance(value, bool):
        return "gzip" if value else "none"
    text = str(value).strip().lower()
    if text in _TRUE:
        return "gzip"
    if text in _FALSE:
        return "none"
    if text in COMPRESSIONS:
        return text
    raise _bad(key, value, "use true, false, gzip, zstd or none", where)


def parse_cron(key: str, value: Any, where: str = "") -> str:
    text = " ".join(str(value).split())
    try:
        Cron(text)
    except ConfigError:
        raise _bad(key, value, "use a 5-field cron expression such as '0 2 * * *'", where) from None
    return text


def parse_job_cron(key: str, value: Any, where: str = "") -> Optional[str]:
    """A job's schedule, or None for "not scheduled": JSON ``false`` or ``off`` (the roles write a disabled job so)."""
    if value is False or str(value).strip().lower() == "off":
        return None
    return parse_cron(key, value, where)


def parse_timezone(key: str, value: Any, where: str = "") -> str:
    text = str(value).strip()
    if text.upper() == "UTC":
        return "UTC"
    try:
        from zoneinfo import ZoneInfo  # pylint: disable=import-outside-toplevel

        ZoneInfo(text)
    except (ImportError, KeyError, ValueError, OSError):
        raise _bad(key, value, "use an IANA time zone name such as UTC or Europe/Berlin", where) from None
    return text


def parse_url(key: str, value: Any, where: str = "") -> str:
    text = str(value).strip()
    if not re.match(r"^postgres(ql)?://", text):
        # Never echo a value that may hold a password: name the key and the rule only.
        origin = " (in %s)" % where if where else ""
        raise ConfigError("%s%s is not valid: use a postgresql://user@host:port/dbname URL" % (key, origin))
    return text


def _parse_text(key: str, value: Any, where: str = "") -> str:  # pylint: disable=unused-argument
    return str(value)


def _parse_optional_text(key: str, value: Any, where: str = "") -> Optional[str]:  # pylint: disable=unused-argument
    return str(value) or None


_REPOSITORY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def parse_repository_id(key: str, value: Any, where: str = "") -> str:
    text = str(value).strip()
    if not _REPOSITORY_ID.match(text):
        raise _bad(key, value, "a repository id is 1-64 letters, digits, '_', '.', ':' or '-'", where)
    return text


_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


def parse_slot_name(key: str, value: Any, where: str = "") -> str:
    text = str(value).strip()
    if not _SLOT_NAME.match(text):
        raise _bad(key, value, "a replication slot name is 1-63 lowercase letters, digits or '_'", where)
    return text


def _parse_duration_text(key: str, value: Any, where: str = "") -> Any:  # pylint: disable=unused-argument
    """Checked now, kept as written: cleanup reads it with parse_duration."""
    parse_duration(key, value)
    return value


def _parse_probes(key: str, value: Any, where: str = "") -> List[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise _bad(key, value, "expected a list of SQL queries that return true", where)
    return list(value)


# The option table's value types (config/options.py) -> parser(key, value, where).
PARSERS = {
    "url": parse_url, "str": _parse_text, "optional_str": _parse_optional_text,
    "backup_type": parse_kind, "compression": parse_compression, "bool": parse_bool, "timezone": parse_timezone,
    "cron": parse_cron, "job_cron": parse_job_cron, "duration": _parse_duration_text, "probes": _parse_probes,
    "repository_id": parse_repository_id, "slot_name": parse_slot_name,
}


def parse_option(option: Option, key: str, value: Any, where: str = "") -> Any:
    """``value`` for the table row ``option``, checked; ``key`` names it in the message."""
    if option.type in ("count", "level"):
        return parse_count(key, value, where, option.minimum)
    return PARSERS[option.type](key, value, where)


def assign(cfg: Config, name: str, value: Any) -> None:
    """Set the table row ``name`` (``backup_dir``, ``kinds.full.schedule``, ``kinds.full.retention.daily``)."""
    parts = name.split(".")
    if parts[0] != "kinds":
        setattr(cfg, name, value)
    elif parts[2] == "retention":
        cfg.kinds[parts[1]].retention[parts[3]] = value
    else:
        setattr(cfg.kinds[parts[1]], parts[2], value)


_MISSING = object()


def _lookup(document: Mapping[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, Mapping) or part not in document:
            return _MISSING
        document = document[part]
    return document


# ----------------------------------------------------------------------------- sources

def apply_json(cfg: Config, document: Mapping[str, Any], where: str) -> None:
    """Merge the users' JSON shape into ``cfg``; unknown keys are rejected by name."""
    if not isinstance(document, Mapping) or not isinstance(document.get("backup"), Mapping):
        raise ConfigError('%s is not valid: expected an object {"backup": {...}}' % where)
    backup = document["backup"]
    known = json_keys()
    for key in backup:
        if key not in known:
            raise _bad("backup.%s" % key, backup[key], "unknown key; known: %s" % ", ".join(sorted(known)), where)
    # The table's plain keys; types, destinations and monitoring below, encryption in config/encryption.py.
    for option in OPTIONS:
        if not option.json or option.json.startswith("types.") or option.parsed_by not in ("settings", "encryption"):
            continue
        value = _lookup(backup, option.json)
        if value is _MISSING or (value is None and option.type == "probes"):
            continue
        if option.name == "encryption":
            apply_encryption_json(cfg, value, where)
        elif option.parsed_by == "settings":
            assign(cfg, option.name, parse_option(option, "backup." + option.json, value, where))
    types = backup.get("types") or {}
    if not isinstance(types, Mapping):
        raise _bad("backup.types", types, "expected an object keyed by backup type", where)
    for kind, settings in types.items():
        prefix = "backup.types.%s" % kind
        parse_kind("backup.types key", kind, where, ALL_KINDS)
        if not isinstance(settings, Mapping):
            raise _bad(prefix, settings, "expected an object", where)
        target = cfg.kinds[kind]
        for key, value in settings.items():
            name = "%s.%s" % (prefix, key)
            if key == "enabled":
                target.enabled = parse_bool(name, value, where)
            elif key == "schedule":
                target.schedule = parse_cron(name, value, where)
            elif key == "compression":
                target.compression = parse_compression(name, value, where)
            elif key == "encryption":
                target.encryption = parse_bool(name, value, where)
            elif key == "retention":
                if not isinstance(value, Mapping):
                    raise _bad(name, value, "expected an object such as {\"daily\": 7}", where)
                target.retention = {}  # a policy given in the file is the whole policy
                for slot, count in value.items():
                    if slot not in RETENTION_SLOTS:
                        raise _bad("%s.%s" % (name, slot), count, "use one of %s" % ", ".join(RETENTION_SLOTS), where)
                    target.retention[slot] = parse_count("%s.%s" % (name, slot), count, where)
            else:
                raise _bad(name, value, "unknown key; known: enabled, schedule, compression, encryption, retention", where)
    destinations = backup.get("destinations")
    if destinations is not None:
        if not isinstance(destinations, Mapping):
            raise _bad("backup.destinations", destinations, "expected an object keyed by destination", where)
        for name, settings in destinations.items():
            if not isinstance(settings, Mapping):
                raise _bad("backup.destinations.%s" % name, settings, "expected an object", where)
            if "enabled" in settings:
                parse_bool("backup.destinations.%s.enabled" % name, settings["enabled"], where)
            cfg.destinations[name] = dict(settings)
    monitoring = backup.get("monitoring")
    if monitoring is not None:
        if not isinstance(monitoring, Mapping):
            raise _bad("backup.monitoring", monitoring, "expected an object", where)
        cfg.monitoring = dict(monitoring)


def load_json_file(cfg: Config, path: str) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise ConfigError("config file %s does not exist" % path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError("config file %s is not valid JSON: line %d column %d: %s" % (path, exc.lineno, exc.colno, exc.msg)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("config file %s is not valid UTF-8 (byte %d)" % (path, exc.start)) from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc)) from None
    apply_json(cfg, document, path)


def apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    """The users' variables, as in their strategy document: every table row with a variable, in table order.

    An empty variable counts as unset. The retention variables govern full backups (the users' default type).
    """
    for option in OPTIONS:
        if not option.env or option.parsed_by not in ("settings", "encryption"):
            continue
        value = env.get(option.env)
        if value in (None, ""):
            continue
        if option.parsed_by == "encryption":
            apply_encryption_setting(cfg, option.name, value, option.env)
        else:
            assign(cfg, option.name, parse_option(option, option.env, value))


_OVERRIDE_LABELS = {"backup_type": "type"}  # the option's name in the CLI and the pg_backup module


def load_config(env: Optional[Mapping[str, str]] = None, config_file: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None, module: bool = False) -> Config:
    """Defaults (``module``: the modules' defaults where the option table has one), then the JSON file
    (``config_file`` or ``BACKUP_CONFIG``), then ``env``, then ``overrides``."""
    env = os.environ if env is None else env
    cfg = default_config()
    if module:
        for option in OPTIONS:
            if option.module_default is not None:
                setattr(cfg, option.name, option.module_default)
    path = config_file or env.get("BACKUP_CONFIG") or None
    if path:
        load_json_file(cfg, path)
    apply_env(cfg, env)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        option = BY_NAME.get(key)
        if key == "destinations":  # the module's list: [{"name": "s3", "type": "s3", "bucket": ...}, ...]
            cfg.destinations.update({str(d.get("name") or d.get("type")): {k: v for k, v in d.items() if k != "name"}
                                     for d in value})
        elif option is None or "." in key or option.parsed_by not in ("settings", "encryption"):
            raise ConfigError("unknown setting %r" % key)
        elif option.parsed_by == "encryption":
            apply_encryption_setting(cfg, key, value)
        else:
            assign(cfg, key, parse_option(option, _OVERRIDE_LABELS.get(key, key), value))
    _check_levels(cfg)
    # Destinations (issue 5): the JSON object merged with BACKUP_S3_*/BACKUP_AZURE_*/BACKUP_GCS_*, checked now.
    from .destinations import parse_destinations  # pylint: disable=import-outside-toplevel
    cfg.destination_settings = parse_destinations(cfg.destinations, env)
    return cfg


def _check_levels(cfg: Config) -> None:
    level = cfg.compression_level
    if level is None:
        return
    top = 22 if cfg.compression == "zstd" else 9
    if level > top:
        raise ConfigError("compression level %d is not valid for %s: use 1 to %d" % (level, cfg.compression, top))
