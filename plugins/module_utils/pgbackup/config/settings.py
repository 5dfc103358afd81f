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

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..core.cron import Cron
from ..core.duration import parse_duration
from ..core.errors import ConfigError
from .encryption import apply_encryption_env, apply_encryption_json, apply_encryption_setting

LOGICAL_KINDS = ("full", "schema", "data", "globals")
ALL_KINDS = ("full", "incremental", "schema", "data", "globals")
COMPRESSIONS = ("gzip", "zstd", "none")

DEFAULT_SCHEDULES = {
    "full": "0 2 * * *",
    "incremental": "0 * * * *",
    "schema": "0 3 * * 1",
    "cleanup": "0 3 * * 0",
}
DEFAULT_RETENTION = {
    "full": {"daily": 7, "weekly": 4, "monthly": 12},
    "incremental": {"hourly": 24, "daily": 7},
    "schema": {"weekly": 8},
    "data": {},
    "globals": {"daily": 7, "weekly": 4, "monthly": 12},
}
RETENTION_SLOTS = ("hourly", "daily", "weekly", "monthly", "yearly", "keep_last", "min_keep")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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

    database_url: Optional[str] = None
    backup_dir: str = "./backups"
    backup_type: str = "full"
    compression: str = "gzip"
    compression_level: Optional[int] = None
    encryption: bool = False
    encryption_mode: str = "aes-256-gcm"                      # or "age" (docs/encryption.md)
    encryption_key_file: Optional[str] = None                 # a 0600 key file outside the backup directory
    encryption_keyring: Optional[str] = None                  # a directory of *.key files (rotation)
    encryption_recipients: List[str] = field(default_factory=list)  # age1... public keys
    encryption_identity_file: Optional[str] = None            # age private keys, restore side only
    pg_bin_dir: Optional[str] = None
    jobs: int = 1
    timezone: str = "UTC"
    kinds: Dict[str, KindSettings] = field(default_factory=dict)
    cleanup_schedule: str = DEFAULT_SCHEDULES["cleanup"]
    destinations: Dict[str, Any] = field(default_factory=lambda: {"local": {"enabled": True}})
    monitoring: Dict[str, Any] = field(default_factory=dict)
    verify_probes: List[str] = field(default_factory=list)  # SQL that must return true after a test restore
    leftover_grace: Optional[str] = None  # a duration; None: prune's default (6 h)
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


def parse_kind(key: str, value: Any, where: str = "", allowed=LOGICAL_KINDS) -> str:
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


# ----------------------------------------------------------------------------- sources

def apply_json(cfg: Config, document: Mapping[str, Any], where: str) -> None:
    """Merge the users' JSON shape into ``cfg``; unknown keys are rejected by name."""
    if not isinstance(document, Mapping) or not isinstance(document.get("backup"), Mapping):
        raise ConfigError('%s is not valid: expected an object {"backup": {...}}' % where)
    backup = document["backup"]
    known = {"types", "destinations", "monitoring", "directory", "pgBinDir", "timezone", "compression",
             "compressionLevel", "encryption", "jobs", "cleanup", "databaseUrl", "verify"}
    for key in backup:
        if key not in known:
            raise _bad("backup.%s" % key, backup[key], "unknown key; known: %s" % ", ".join(sorted(known)), where)
    if "directory" in backup:
        cfg.backup_dir = str(backup["directory"])
    if "pgBinDir" in backup:
        cfg.pg_bin_dir = str(backup["pgBinDir"]) or None
    if "timezone" in backup:
        cfg.timezone = parse_timezone("backup.timezone", backup["timezone"], where)
    if "compression" in backup:
        cfg.compression = parse_compression("backup.compression", backup["compression"], where)
    if "compressionLevel" in backup:
        cfg.compression_level = parse_count("backup.compressionLevel", backup["compressionLevel"], where, 1)
    if "encryption" in backup:
        apply_encryption_json(cfg, backup["encryption"], where)
    if "jobs" in backup:
        cfg.jobs = parse_count("backup.jobs", backup["jobs"], where, 1)
    if "databaseUrl" in backup:
        cfg.database_url = parse_url("backup.databaseUrl", backup["databaseUrl"], where)
    probes = (backup.get("verify") or {}).get("probes")
    if probes is not None:
        if not isinstance(probes, list) or not all(isinstance(p, str) and p.strip() for p in probes):
            raise _bad("backup.verify.probes", probes, "expected a list of SQL queries that return true", where)
        cfg.verify_probes = list(probes)
    cleanup = backup.get("cleanup") or {}
    if "schedule" in cleanup:
        cfg.cleanup_schedule = parse_cron("backup.cleanup.schedule", cleanup["schedule"], where)
    if "leftoverGrace" in cleanup:
        cfg.leftover_grace = str(parse_duration("backup.cleanup.leftoverGrace", cleanup["leftoverGrace"]).total_seconds())
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
    apply_json(cfg, document, path)


def apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    """The users' variables, as in their strategy document."""
    def get(name: str) -> Optional[str]:
        value = env.get(name)
        return value if value not in (None, "") else None

    if get("DATABASE_URL"):
        cfg.database_url = parse_url("DATABASE_URL", env["DATABASE_URL"])
    if get("BACKUP_DIR"):
        cfg.backup_dir = env["BACKUP_DIR"]
    if get("BACKUP_TYPE"):
        cfg.backup_type = parse_kind("BACKUP_TYPE", env["BACKUP_TYPE"])
    if get("BACKUP_COMPRESSION"):
        cfg.compression = parse_compression("BACKUP_COMPRESSION", env["BACKUP_COMPRESSION"])
    if get("BACKUP_COMPRESSION_LEVEL"):
        cfg.compression_level = parse_count("BACKUP_COMPRESSION_LEVEL", env["BACKUP_COMPRESSION_LEVEL"], minimum=1)
    if get("BACKUP_ENCRYPTION"):
        cfg.encryption = parse_bool("BACKUP_ENCRYPTION", env["BACKUP_ENCRYPTION"])
    apply_encryption_env(cfg, env)
    if get("BACKUP_PG_BIN_DIR"):
        cfg.pg_bin_dir = env["BACKUP_PG_BIN_DIR"]
    if get("BACKUP_JOBS"):
        cfg.jobs = parse_count("BACKUP_JOBS", env["BACKUP_JOBS"], minimum=1)
    if get("BACKUP_TIMEZONE"):
        cfg.timezone = parse_timezone("BACKUP_TIMEZONE", env["BACKUP_TIMEZONE"])
    if get("BACKUP_LEFTOVER_GRACE"):
        parse_duration("BACKUP_LEFTOVER_GRACE", env["BACKUP_LEFTOVER_GRACE"])
        cfg.leftover_grace = env["BACKUP_LEFTOVER_GRACE"]
    # The users' retention variables govern full backups (their default type).
    for slot in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY"):
        name = "BACKUP_RETENTION_%s" % slot
        if get(name):
            cfg.kinds["full"].retention[slot.lower()] = parse_count(name, env[name])
    for kind in ("FULL", "INCREMENTAL", "SCHEMA"):
        name = "BACKUP_SCHEDULE_%s" % kind
        if get(name):
            cfg.kinds[kind.lower()].schedule = parse_cron(name, env[name])
    if get("BACKUP_SCHEDULE_CLEANUP"):
        cfg.cleanup_schedule = parse_cron("BACKUP_SCHEDULE_CLEANUP", env["BACKUP_SCHEDULE_CLEANUP"])


def load_config(env: Optional[Mapping[str, str]] = None, config_file: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults, then the JSON file (``config_file`` or ``BACKUP_CONFIG``), then ``env``, then ``overrides``."""
    env = os.environ if env is None else env
    cfg = default_config()
    path = config_file or env.get("BACKUP_CONFIG") or None
    if path:
        load_json_file(cfg, path)
    apply_env(cfg, env)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "database_url":
            cfg.database_url = parse_url("database_url", value)
        elif key == "backup_dir":
            cfg.backup_dir = str(value)
        elif key == "backup_type":
            cfg.backup_type = parse_kind("type", value)
        elif key == "compression":
            cfg.compression = parse_compression("compression", value)
        elif key == "compression_level":
            cfg.compression_level = parse_count("compression_level", value, minimum=1)
        elif key == "encryption":
            cfg.encryption = parse_bool("encryption", value)
        elif key.startswith("encryption_"):
            apply_encryption_setting(cfg, key, value)
        elif key == "pg_bin_dir":
            cfg.pg_bin_dir = str(value)
        elif key == "jobs":
            cfg.jobs = parse_count("jobs", value, minimum=1)
        elif key == "destinations":  # the module's list: [{"name": "s3", "type": "s3", "bucket": ...}, ...]
            cfg.destinations.update({str(d.get("name") or d.get("type")): {k: v for k, v in d.items() if k != "name"}
                                     for d in value})
        else:
            raise ConfigError("unknown setting %r" % key)
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
