# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option table: every setting declared once.

One row per setting: its name (the ``Config`` attribute, dotted for per-kind settings), value type,
built-in default, environment variable, path in the JSON file (under ``"backup"``), module option, command-line
options and help. Derived from it: ``Config``'s defaults, the environment parsing and the JSON file's simple keys
(config/settings.py), ``pgbackup_common_argument_spec()`` (plugins/module_utils/common.py) and
docs/configuration.md (``python -m seawall_pgbackup.config.options --markdown``). tests/unit/test_options.py
checks the rest (CLI parser, doc fragment, modules' DOCUMENTATION, README, roles) against it.

This module imports nothing of the engine: settings.py maps each ``type`` to its parser.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

ALL_KINDS = ("full", "incremental", "schema", "data", "globals", "base")


@dataclass(frozen=True)
class Option:
    """One setting. ``parsed_by`` says which code reads it: ``settings`` (the loops in settings.py), or the
    sections with their own parser (``encryption``, ``destinations``, ``monitoring``), or ``load_config``."""

    name: str
    type: str
    default: Any
    help: str
    env: Optional[str] = None
    json: Optional[str] = None          # path under "backup"; <kind>, <name> and [] mark repeated parts
    module: Optional[str] = None        # option of every module (pgbackup_common_argument_spec)
    module_type: Optional[str] = None
    module_fallback: bool = False       # the module option falls back to ``env``
    module_choices: Tuple[str, ...] = ()
    module_elements: Optional[str] = None
    no_log: Optional[bool] = None
    modules: Tuple[str, ...] = ()       # single modules' options that set it: "pg_backup.compression"
    cli: Tuple[str, ...] = ()           # "--backup-dir" (every command) or "cleanup --timezone" (one command)
    secret: bool = False
    parsed_by: str = "settings"
    minimum: int = 0                    # for counts
    module_default: Any = None          # the modules' default when it differs (a module has no useful cwd)


def _schedule(kind: str, default: Optional[str], env: bool) -> Option:
    return Option("kinds.%s.schedule" % kind, "cron", default,
                  "When %s backups run (5-field cron; the timers' schedule, read by the health check)." % kind,
                  env="BACKUP_SCHEDULE_%s" % kind.upper() if env else None, json="types.%s.schedule" % kind)


def _retention(kind: str, slot: str, default: Optional[int], env: bool = False) -> Option:
    unit = "day" if slot == "daily" else slot[:-2]
    return Option("kinds.%s.retention.%s" % (kind, slot), "count", default,
                  "%s backups kept, one per %s slot (GFS)." % (kind.capitalize(), unit),
                  env="BACKUP_RETENTION_%s" % slot.upper() if env else None,
                  json="types.%s.retention.%s" % (kind, slot))


def _monitoring(name: str, type_: str, default: Any, help_: str, env: Optional[str] = None,
                json: Optional[str] = None, secret: bool = False, cli: Tuple[str, ...] = ()) -> Option:
    return Option("monitoring." + name, type_, default, help_, env=env, json=json, secret=secret, cli=cli,
                  parsed_by="monitoring")


def _destination(suffix: str, key: str, help_: str) -> Option:
    return Option("destinations.<name>.%s" % key, "str", None, help_, env="BACKUP_<TYPE>_%s" % suffix,
                  json="destinations.<name>.%s" % key, parsed_by="destinations")


# The order is the order of application (and so of the first error reported) and of docs/configuration.md.
OPTIONS: Tuple[Option, ...] = (
    Option("config_file", "path", None, "The JSON configuration file in the users' shape.",
           env="BACKUP_CONFIG", module="config_file", module_type="path", module_fallback=True,
           cli=("--config",), parsed_by="load_config"),
    Option("database_url", "url", None,
           "The database to back up, postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME; results show it without "
           "its password.",
           env="DATABASE_URL", json="databaseUrl", module="database_url", module_type="str", module_fallback=True,
           no_log=True, secret=True),
    Option("backup_dir", "str", "./backups", "The local backup directory (the repository). Modules default to "
           "`/var/backups/postgresql` (the roles' directory): their working directory is Ansible's, not yours.",
           env="BACKUP_DIR", json="directory", module="backup_dir", module_type="path", module_fallback=True,
           cli=("--backup-dir",), module_default="/var/backups/postgresql"),
    Option("backup_type", "backup_type", "full", "The kind `create` takes when none is given: full, schema, data, "
           "globals, base (physical, pg_basebackup) or incremental (the next link of the newest base or "
           "incremental: native on 17+ with summarize_wal, else the WAL archived since it).", env="BACKUP_TYPE",
           modules=("pg_backup.type",), cli=("create --type",)),
    Option("compression", "compression", "gzip", "gzip, zstd or none (true means gzip, false none).",
           env="BACKUP_COMPRESSION", json="compression", modules=("pg_backup.compression",),
           cli=("create --compression",)),
    Option("compression_level", "level", None, "Compression level: 1-9 for gzip, 1-22 for zstd; unset: the "
           "codec's default.", env="BACKUP_COMPRESSION_LEVEL", json="compressionLevel",
           modules=("pg_backup.compression_level",), minimum=1),
    Option("encryption", "bool", False, "Encrypt new backups after compression (docs/encryption.md).",
           env="BACKUP_ENCRYPTION", json="encryption", module="encryption", module_type="bool",
           parsed_by="encryption"),
    Option("encryption_mode", "encryption_mode", "aes-256-gcm", "aes-256-gcm (a symmetric key) or age (public "
           "keys).", env="BACKUP_ENCRYPTION_MODE", json="encryption.mode", module="encryption_mode",
           module_type="str", module_choices=("aes-256-gcm", "age"), parsed_by="encryption"),
    Option("encryption_key_file", "key_path", None, "An aes-256-gcm key file (0600, outside the backup "
           "directory); new backups use it.", env="BACKUP_ENCRYPTION_KEY_FILE", json="encryption.keyFile",
           module="encryption_key_file", module_type="path", no_log=False, parsed_by="encryption"),
    Option("encryption_keyring", "key_path", None, "A directory of *.key files: reads find a key by id; new "
           "backups use the newest.", env="BACKUP_ENCRYPTION_KEYRING", json="encryption.keyring",
           module="encryption_keyring", module_type="path", no_log=False, cli=("keygen --keyring",),
           parsed_by="encryption"),
    Option("encryption_recipients", "recipients", [], "age public keys (age1...) or files of them, comma "
           "separated.", env="BACKUP_ENCRYPTION_RECIPIENTS", json="encryption.recipients",
           module="encryption_recipients", module_type="list", module_elements="str", parsed_by="encryption"),
    Option("encryption_identity_file", "key_path", None, "An age identity file (0600); only to verify or "
           "restore age-mode backups.", env="BACKUP_ENCRYPTION_IDENTITY_FILE", json="encryption.identityFile",
           module="encryption_identity_file", module_type="path", no_log=False, parsed_by="encryption"),
    Option("encryption_signing_key_file", "key_path", None, "An Ed25519 private key file (0600) that signs "
           "manifests on the backup host (`keygen --signing`); age mode needs one.",
           env="BACKUP_ENCRYPTION_SIGNING_KEY_FILE", json="encryption.signingKeyFile",
           module="encryption_signing_key_file", module_type="path", no_log=False, parsed_by="encryption"),
    Option("encryption_trusted_signers", "signers", [], "Ed25519 public keys (ed25519:...) or files of them: "
           "the signers whose manifests are trusted on this host.", env="BACKUP_ENCRYPTION_TRUSTED_SIGNERS",
           json="encryption.trustedSigners", module="encryption_trusted_signers", module_type="list",
           module_elements="str", parsed_by="encryption"),
    Option("encryption_retired_keys", "key_ids", [], "Key ids that are retired: still read, never written; "
           "health warns while a backup or a copy still needs one.", env="BACKUP_ENCRYPTION_RETIRED_KEYS",
           json="encryption.retiredKeys", module="encryption_retired_keys", module_type="list",
           module_elements="str", no_log=False, parsed_by="encryption"),
    Option("repository_id", "repository_id", "default", "The repository's name, signed into every manifest and "
           "bound into every encrypted file: a backup of another repository is refused.",
           env="BACKUP_REPOSITORY_ID", json="repository", module="repository_id", module_type="str"),
    Option("accept_unsigned", "bool", False, "Accept manifests without a signature (written before manifests "
           "were signed), to migrate them once with `rekey --all`.", env="BACKUP_ACCEPT_UNSIGNED",
           module="accept_unsigned", module_type="bool", cli=("--accept-unsigned",)),
    Option("accept_unencrypted", "bool", False, "Accept backups that are not encrypted, or not under a "
           "configured key or recipient, although encryption is configured.", env="BACKUP_ACCEPT_UNENCRYPTED",
           module="accept_unencrypted", module_type="bool", cli=("--accept-unencrypted",)),
    Option("pg_bin_dir", "optional_str", None, "Directory of the PostgreSQL client tools, used alone; unset: "
           "the lowest installed client major at least the server's.", env="BACKUP_PG_BIN_DIR", json="pgBinDir",
           module="pg_bin_dir", module_type="path", cli=("--pg-bin-dir",)),
    Option("wal_slot", "slot_name", "seawall_pgbackup", "The physical replication slot `wal-receive` streams "
           "through (pg_receivewal; created when missing): lowercase letters, digits and '_', at most 63.",
           env="BACKUP_WAL_SLOT", json="wal.slot", cli=("wal-receive --slot",)),
    Option("jobs", "count", 1, "Parallel pg_restore jobs (restore, verify, drill).", env="BACKUP_JOBS", json="jobs",
           modules=("pg_backup_restore.jobs",), cli=("restore --jobs",), minimum=1),
    Option("wal_prefetch", "count", 8, "WAL segments a point-in-time recovery fetches ahead in the background "
           "(`wal-fetch --spool`; docs/pitr.md); 0: off. The spool in the restored `pg_wal` holds at most this many.",
           env="BACKUP_WAL_PREFETCH", json="wal.prefetch"),
    Option("timezone", "timezone", "UTC", "Time zone of the retention slots and of times given without an "
           "offset.", env="BACKUP_TIMEZONE", json="timezone", modules=("pg_backup_retention.timezone",),
           cli=("cleanup --timezone",)),
    Option("leftover_grace", "duration", None, "Files of interrupted runs older than this are removed by "
           "cleanup; unset: 6h.", env="BACKUP_LEFTOVER_GRACE", json="cleanup.leftoverGrace",
           modules=("pg_backup_retention.leftover_grace",), cli=("cleanup --leftover-grace",)),
    _retention("full", "hourly", None, env=True),
    _retention("full", "daily", 7, env=True),
    _retention("full", "weekly", 4, env=True),
    _retention("full", "monthly", 12, env=True),
    _retention("incremental", "hourly", 24),
    _retention("incremental", "daily", 7),
    _retention("schema", "weekly", 8),
    _retention("globals", "daily", 7),
    _retention("globals", "weekly", 4),
    _retention("globals", "monthly", 12),
    _retention("base", "daily", 7),
    _retention("base", "weekly", 4),
    _schedule("full", "0 2 * * *", env=True),
    _schedule("incremental", "0 * * * *", env=True),
    _schedule("schema", "0 3 * * 1", env=True),
    _schedule("data", None, env=False),
    _schedule("globals", None, env=False),
    _schedule("base", None, env=False),
    Option("cleanup_schedule", "job_cron", "0 3 * * 0", "When cleanup (the retention policy) runs; `off` (or JSON "
           "`false`): not scheduled.",
           env="BACKUP_SCHEDULE_CLEANUP", json="cleanup.schedule"),
    Option("verify_schedule", "job_cron", "30 3 * * *", "When `verify latest --level archive` runs (the foreground "
           "scheduler, `schedule`; the schedule role's `pgbackup_schedule_verify`); `off` (or JSON `false`): not "
           "scheduled.",
           env="BACKUP_SCHEDULE_VERIFY", json="verify.schedule"),
    Option("health_schedule", "job_cron", "*/15 * * * *", "When `health` runs (the foreground scheduler, `schedule`; "
           "the schedule role's `pgbackup_schedule_health`); `off` (or JSON `false`), or "
           "`monitoring.healthChecks.enabled=false`: not scheduled.",
           env="BACKUP_SCHEDULE_HEALTH", json="monitoring.healthChecks.schedule"),
    Option("schedule_jitter", "duration", 0, "`schedule`: each run starts up to this long after its time (seconds or "
           "a duration such as 5m), at random (like systemd's RandomizedDelaySec=), so many hosts do not start "
           "together.",
           env="BACKUP_SCHEDULE_JITTER", cli=("schedule --jitter",)),
    Option("schedule_grace", "duration", 20, "`schedule`: on SIGTERM/SIGINT a running job gets this long to finish "
           "(seconds or a duration such as 10m), then SIGTERM (it removes its partial files), then SIGKILL 10 s "
           "later. 20 fits Kubernetes' default terminationGracePeriodSeconds (30).", env="BACKUP_SCHEDULE_GRACE", cli=("schedule --grace",)),
    Option("verify_probes", "probes", [], "SQL queries that must return true on a test restore.",
           json="verify.probes", modules=("pg_backup_verify.probes",), cli=("verify --probe", "drill --probe")),
    # Per kind, from the JSON file only (types.<kind>); the retention slots are hourly, daily, weekly, monthly,
    # yearly, keep_last and min_keep, and a retention object given in the file replaces the whole policy.
    Option("kinds.<kind>.enabled", "bool", True, "Whether the kind is scheduled and expected by the health check.",
           json="types.<kind>.enabled"),
    Option("kinds.<kind>.compression", "compression", None, "The kind's compression; unset: the global one.",
           json="types.<kind>.compression"),
    Option("kinds.<kind>.encryption", "bool", None, "The kind's encryption; unset: the global one.",
           json="types.<kind>.encryption"),
    Option("kinds.<kind>.retention", "retention", None, "The kind's retention policy, e.g. {\"daily\": 7}.",
           json="types.<kind>.retention"),
    # Sections with their own parser: config/destinations.py (docs/storage.md), config/monitoring.py
    # (docs/monitoring.md). Their top-level keys and environment variables are listed here.
    Option("destinations", "destinations", {"local": {"enabled": True}}, "Copy targets by name (s3, azure, gcs, a "
           "second directory); docs/storage.md.", json="destinations", modules=("pg_backup.destinations",),
           parsed_by="destinations"),
    _destination("ENABLED", "enabled", "Turn the destination named like the type on or off."),
    _destination("BUCKET", "bucket", "S3 or GCS bucket (enables that destination)."),
    _destination("CONTAINER", "container", "Azure container (enables that destination)."),
    _destination("PREFIX", "prefix", "Key prefix inside the bucket or container."),
    _destination("ENDPOINT", "endpoint", "Service endpoint (S3-compatible stores, emulators)."),
    _destination("REGION", "region", "S3 region."),
    _destination("STORAGE_CLASS", "storageClass", "S3 or GCS storage class."),
    _destination("ACCESS_TIER", "accessTier", "Azure access tier (default Cool)."),
    _destination("SSE", "sse", "S3 server-side encryption."),
    _destination("KMS_KEY_ID", "kmsKeyId", "S3 KMS key id."),
    _destination("ACCOUNT", "account", "Azure storage account."),
    _destination("PATH", "path", "Directory of a second local destination (enables it)."),
    _destination("PROJECT", "project", "GCS project."),
    _destination("CREDENTIALS_FILE", "credentialsFile", "A 0600 credentials file."),
    _destination("ANONYMOUS", "anonymous", "Use no credentials (public emulators)."),
    _destination("VERIFY_UPLOAD", "verifyUpload", "How an upload is checked: stream or size."),
    Option("destinations.<name>.partSizeMB", "count", None, "Upload part size in MiB, for every destination.",
           env="BACKUP_UPLOAD_PART_SIZE_MB", json="destinations.<name>.partSizeMB", parsed_by="destinations"),
    Option("destinations.<name>.concurrency", "count", None, "Parallel part uploads, for every destination.",
           env="BACKUP_UPLOAD_CONCURRENCY", json="destinations.<name>.concurrency", parsed_by="destinations"),
    Option("destinations.<name>.retries", "count", None, "Upload retries, for every destination.",
           env="BACKUP_UPLOAD_RETRIES", json="destinations.<name>.retries", parsed_by="destinations"),
    Option("destinations.<name>.retryTimeout", "duration", None, "Give up retrying after this long, for every "
           "destination.", env="BACKUP_UPLOAD_RETRY_TIMEOUT", json="destinations.<name>.retryTimeout",
           parsed_by="destinations"),
    _monitoring("", "monitoring", {}, "Alerts, dead man's switch, health thresholds and metrics; "
                "docs/monitoring.md.", json="monitoring"),
    _monitoring("alerts.onSuccess", "bool", False, "Also notify after a successful run.",
                env="BACKUP_NOTIFY_ON_SUCCESS", json="monitoring.alerts.onSuccess"),
    _monitoring("alerts.onWarning", "bool", False, "Also notify when health is warning.",
                env="BACKUP_NOTIFY_ON_WARNING", json="monitoring.alerts.onWarning"),
    _monitoring("alerts.email.password", "str", None, "SMTP password.", env="BACKUP_SMTP_PASSWORD", secret=True),
    _monitoring("alerts.slack.webhookUrl", "url", None, "Slack incoming webhook (enables Slack).",
                env="BACKUP_SLACK_WEBHOOK_URL", json="monitoring.alerts.slack.webhookUrl", secret=True),
    _monitoring("alerts.discord.webhookUrl", "url", None, "Discord webhook (enables Discord).",
                env="BACKUP_DISCORD_WEBHOOK_URL", json="monitoring.alerts.discord.webhookUrl", secret=True),
    _monitoring("alerts.webhooks[].url", "url", None, "A custom JSON webhook (added to the configured ones).",
                env="BACKUP_WEBHOOK_URL", json="monitoring.alerts.webhooks[].url", secret=True),
    _monitoring("alerts.webhooks[].secret", "str", None, "HMAC key signing the custom webhooks' bodies.",
                env="BACKUP_WEBHOOK_SECRET", secret=True),
    _monitoring("deadMansSwitch.url", "url", None, "Dead man's switch ping URL (enables it).",
                env="BACKUP_DEADMANS_SWITCH_URL", json="monitoring.deadMansSwitch.url", secret=True),
    _monitoring("metrics.textfileDir", "str", None, "node_exporter textfile directory for the metrics.",
                env="BACKUP_METRICS_DIR", json="monitoring.metrics.textfileDir"),
    _monitoring("metrics.listen", "str", "127.0.0.1:9187", "Address of `serve` (/metrics, /healthz).",
                json="monitoring.metrics.listen", cli=("serve --listen",)),
)

BY_NAME: Dict[str, Option] = {option.name: option for option in OPTIONS}
BY_ENV: Dict[str, Option] = {option.env: option for option in OPTIONS if option.env}


def module_options() -> List[Option]:
    """The rows that are options of every module, in table order."""
    return [option for option in OPTIONS if option.module]


def json_keys() -> List[str]:
    """The keys the JSON file's ``backup`` object accepts."""
    found: List[str] = []
    for option in OPTIONS:
        if option.json and option.json.split(".")[0] not in found:
            found.append(option.json.split(".")[0])
    return found


def _default_text(option: Option) -> str:
    value = option.default
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "`%s`" % ("true" if value else "false")
    if isinstance(value, dict):
        return "local"
    if option.module_default is not None:
        return "`%s` (modules: `%s`)" % (value, option.module_default)
    return "`%s`" % value


def _cell(text: Optional[str]) -> str:
    return "`%s`" % text if text else ""


def render_markdown() -> str:
    """docs/configuration.md: one table over every setting, derived from OPTIONS."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from plugins/module_utils/pgbackup/config/options.py by",
        "     `python -m seawall_pgbackup.config.options --markdown > docs/configuration.md`; do not edit. -->",
        "",
        "Every setting, once. Precedence, lowest first: the built-in default, the JSON file (`--config`,",
        "the module option `config_file` or `BACKUP_CONFIG`; JSON paths below are under `\"backup\"`), the",
        "environment variable, then the command-line or module option. An empty environment variable counts as",
        "unset. Secrets come from the environment only, never from the JSON file or a command line, except the",
        "database URL (prefer a passfile for its password). `<kind>` is one of "
        + ", ".join(ALL_KINDS) + "; `<name>`",
        "a destination's name; `<TYPE>` one of S3, AZURE, GCS, LOCAL (the destination named like the type).",
        "",
        "| Setting | Environment | JSON | Module option | Command line | Default | Description |",
        "|---|---|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        module = ["`%s`" % option.module] if option.module else []
        module += ["`%s` (%s)" % (m.split(".")[1], m.split(".")[0]) for m in option.modules]
        help_text = option.help + (" Secret." if option.secret else "")
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            "`%s`" % option.name, _cell(option.env), _cell(option.json), ", ".join(module),
            ", ".join("`%s`" % c for c in option.cli), _default_text(option), help_text.replace("|", "\\|")))
    lines += ["", "Details: [encryption](encryption.md), [destinations](storage.md), [monitoring](monitoring.md).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.stderr.write("usage: python -m seawall_pgbackup.config.options --markdown\n")
        raise SystemExit(2)
    sys.stdout.write(render_markdown())
