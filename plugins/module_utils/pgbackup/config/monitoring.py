# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The users' ``monitoring`` block and its environment variables, read into one settings object.

Shape (every key optional; the users' own ``alerts.enabled`` and ``healthChecks.enabled`` keep their meaning)::

    "monitoring": {
      "alerts": {"enabled": true, "onSuccess": false, "onWarning": false, "timeoutSeconds": 10,
                 "email": {"host": "smtp.example.com", "port": 587, "security": "starttls",
                           "username": "backup", "from": "backup@example.com", "to": ["dba@example.com"]},
                 "slack": {"enabled": true}, "discord": {"enabled": true},
                 "webhooks": [{"url": "https://hooks.example.com/pg", "headers": {"X-Team": "db"},
                               "signatureHeader": "X-Seawall-Signature"}]},
      "deadMansSwitch": {"enabled": true, "commands": ["create"]},
      "healthChecks": {"enabled": true, "connectTimeoutSeconds": 10, "diskWarningPercent": 20,
                       "diskCriticalPercent": 10, "minFreeFulls": 2, "checksum": true,
                       "drillMaxAge": "8d", "drillRequired": false},
      "metrics": {"enabled": true, "textfileDir": "/var/lib/prometheus/node-exporter", "listen": "127.0.0.1:9187"}
    }

Secrets never live in the JSON file (it is readable by the backup group): the SMTP password, the
Slack and Discord webhook URLs (their path is the token), the webhook HMAC secret and the
dead-man's-switch URL come from environment variables (``secrets.env`` on installed hosts):
``BACKUP_SMTP_PASSWORD``, ``BACKUP_SLACK_WEBHOOK_URL``, ``BACKUP_DISCORD_WEBHOOK_URL``,
``BACKUP_WEBHOOK_URL``, ``BACKUP_WEBHOOK_SECRET``, ``BACKUP_DEADMANS_SWITCH_URL``. Setting one of the
URL variables enables its channel. ``BACKUP_METRICS_DIR`` sets the textfile directory,
``BACKUP_NOTIFY_ON_SUCCESS`` / ``BACKUP_NOTIFY_ON_WARNING`` the optional messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..core.duration import parse_duration
from ..core.errors import ConfigError
from .settings import parse_bool, parse_count

SECURITIES = ("starttls", "ssl", "none")
DEFAULT_SIGNATURE_HEADER = "X-Seawall-Signature"
# Every operation that changes or checks something is monitored alike, from any front end (ops/perform.py).
MONITORED_COMMANDS = ("create", "cleanup", "verify", "drill", "health", "restore", "sync", "rekey")


@dataclass
class EmailSettings:
    host: str
    port: int
    security: str
    sender: str
    recipients: List[str]
    username: Optional[str] = None
    password: Optional[str] = None  # secret
    cafile: Optional[str] = None


@dataclass
class WebhookSettings:
    name: str
    url: str  # secret: may embed a token
    style: str = "json"  # json (custom webhook), slack, discord
    headers: Dict[str, str] = field(default_factory=dict)
    secret: Optional[str] = None  # HMAC key, secret
    signature_header: str = DEFAULT_SIGNATURE_HEADER


@dataclass
class HealthThresholds:
    connect_timeout: int = 10
    disk_warning_percent: float = 20.0
    disk_critical_percent: float = 10.0
    min_free_fulls: int = 2  # warning below this many more fulls of the recent size; critical below one
    checksum: bool = True
    drill_max_age_seconds: float = 8 * 86400.0
    drill_required: bool = False  # no drill report at all: warning when true, ok (not configured) otherwise
    last_run_max_age_seconds: Optional[float] = None


@dataclass
class MonitoringSettings:
    alerts_enabled: bool = True
    on_success: bool = False
    on_warning: bool = False
    timeout: float = 10.0
    email: Optional[EmailSettings] = None
    webhooks: List[WebhookSettings] = field(default_factory=list)
    deadmans_url: Optional[str] = None  # secret
    deadmans_commands: List[str] = field(default_factory=lambda: ["create"])
    health: HealthThresholds = field(default_factory=HealthThresholds)
    metrics_enabled: bool = True
    textfile_dir: Optional[str] = None
    listen: str = "127.0.0.1:9187"

    @property
    def channels(self) -> List[str]:
        names = ["email"] if self.email else []
        return names + [w.name for w in self.webhooks]


def _bad(key: str, value: Any, allowed: str, secret: bool = False) -> ConfigError:
    shown = "" if secret else "=%r" % (value,)
    return ConfigError("monitoring.%s%s is not valid: %s" % (key, shown, allowed))


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(key, value, "expected an object")
    return value


def _check_keys(block: Mapping[str, Any], key: str, known: tuple) -> None:
    for name in block:
        if name not in known:
            raise _bad("%s.%s" % (key, name), block[name], "unknown key; known: %s" % ", ".join(known))


def _number(key: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(key, value, "use a number from %g to %g" % (low, high)) from None
    if isinstance(value, bool) or not low <= number <= high:
        raise _bad(key, value, "use a number from %g to %g" % (low, high))
    return number


def _url(key: str, value: Any) -> str:
    text = str(value).strip()
    if not text.startswith(("http://", "https://")):
        raise _bad(key, value, "use an http:// or https:// URL", secret=True)
    return text


def _env(env: Mapping[str, str], name: str) -> Optional[str]:
    value = env.get(name)
    return value if value not in (None, "") else None


def load_monitoring(block: Optional[Mapping[str, Any]], env: Mapping[str, str]) -> MonitoringSettings:
    """Validate ``block`` (``cfg.monitoring``) and the environment; one line per rejected value."""
    block = _mapping(block, "monitoring")
    _check_keys(block, "monitoring", ("alerts", "healthChecks", "deadMansSwitch", "metrics"))
    settings = MonitoringSettings()
    alerts = _mapping(block.get("alerts"), "alerts")
    _check_keys(alerts, "alerts", ("enabled", "onSuccess", "onWarning", "timeoutSeconds", "email", "slack",
                                   "discord", "webhooks"))
    settings.alerts_enabled = parse_bool("monitoring.alerts.enabled", alerts.get("enabled", True))
    settings.on_success = parse_bool("monitoring.alerts.onSuccess",
                                     _env(env, "BACKUP_NOTIFY_ON_SUCCESS") or alerts.get("onSuccess", False))
    settings.on_warning = parse_bool("monitoring.alerts.onWarning",
                                     _env(env, "BACKUP_NOTIFY_ON_WARNING") or alerts.get("onWarning", False))
    if "timeoutSeconds" in alerts:
        settings.timeout = _number("alerts.timeoutSeconds", alerts["timeoutSeconds"], 1, 300)
    settings.email = _email(_mapping(alerts.get("email"), "alerts.email"), env)
    for style, variable in (("slack", "BACKUP_SLACK_WEBHOOK_URL"), ("discord", "BACKUP_DISCORD_WEBHOOK_URL")):
        own = _mapping(alerts.get(style), "alerts.%s" % style)
        _check_keys(own, "alerts.%s" % style, ("enabled", "webhookUrl"))
        url = _env(env, variable) or own.get("webhookUrl")
        enabled = parse_bool("monitoring.alerts.%s.enabled" % style, own.get("enabled", bool(url)))
        if enabled and not url:
            raise ConfigError("monitoring.alerts.%s is enabled but has no webhook URL: set %s" % (style, variable))
        if enabled:
            settings.webhooks.append(WebhookSettings(style, _url("alerts.%s.webhookUrl" % style, url), style=style))
    hooks = alerts.get("webhooks") or []
    if not isinstance(hooks, list):
        raise _bad("alerts.webhooks", hooks, "expected a list of objects")
    if _env(env, "BACKUP_WEBHOOK_URL"):
        hooks = list(hooks) + [{"url": env["BACKUP_WEBHOOK_URL"]}]
    for index, hook in enumerate(hooks):
        key = "alerts.webhooks[%d]" % index
        hook = _mapping(hook, key)
        _check_keys(hook, key, ("url", "headers", "signatureHeader", "secretEnv", "enabled", "name"))
        if not parse_bool("monitoring.%s.enabled" % key, hook.get("enabled", True)):
            continue
        if not hook.get("url"):
            raise ConfigError("monitoring.%s has no url" % key)
        headers = _mapping(hook.get("headers"), key + ".headers")
        for name, value in headers.items():
            if not isinstance(value, str) or "\n" in value or "\r" in value or ":" in str(name):
                raise _bad("%s.headers.%s" % (key, name), value, "expected a one-line string header value")
        secret_env = str(hook.get("secretEnv") or "BACKUP_WEBHOOK_SECRET")
        settings.webhooks.append(WebhookSettings(
            str(hook.get("name") or "webhook%s" % ("" if index == 0 else index + 1)), _url(key + ".url", hook["url"]),
            headers={str(k): v for k, v in headers.items()}, secret=_env(env, secret_env),
            signature_header=str(hook.get("signatureHeader") or DEFAULT_SIGNATURE_HEADER)))
    switch = _mapping(block.get("deadMansSwitch"), "deadMansSwitch")
    _check_keys(switch, "deadMansSwitch", ("enabled", "url", "commands"))
    if "commands" in switch:
        commands = switch["commands"]
        if not isinstance(commands, list) or not set(commands) <= set(MONITORED_COMMANDS):
            raise _bad("deadMansSwitch.commands", commands, "expected a list of %s" % ", ".join(MONITORED_COMMANDS))
        settings.deadmans_commands = list(commands)
    url = _env(env, "BACKUP_DEADMANS_SWITCH_URL") or switch.get("url")
    if parse_bool("monitoring.deadMansSwitch.enabled", switch.get("enabled", bool(url))):
        if not url:
            raise ConfigError("monitoring.deadMansSwitch is enabled but has no URL: set BACKUP_DEADMANS_SWITCH_URL")
        settings.deadmans_url = _url("deadMansSwitch.url", url).rstrip("/")
    settings.health = _thresholds(_mapping(block.get("healthChecks"), "healthChecks"))
    metrics = _mapping(block.get("metrics"), "metrics")
    _check_keys(metrics, "metrics", ("enabled", "textfileDir", "listen"))
    settings.metrics_enabled = parse_bool("monitoring.metrics.enabled", metrics.get("enabled", True))
    settings.textfile_dir = _env(env, "BACKUP_METRICS_DIR") or metrics.get("textfileDir") or None
    if metrics.get("listen"):
        settings.listen = str(metrics["listen"])
        parse_listen(settings.listen)
    return settings


def _email(block: Mapping[str, Any], env: Mapping[str, str]) -> Optional[EmailSettings]:
    _check_keys(block, "alerts.email", ("enabled", "host", "port", "security", "username", "from", "to", "cafile"))
    if not block or not parse_bool("monitoring.alerts.email.enabled", block.get("enabled", True)):
        return None
    for key in ("host", "from", "to"):
        if not block.get(key):
            raise ConfigError("monitoring.alerts.email.%s is missing" % key)
    security = str(block.get("security", "starttls")).lower()
    if security not in SECURITIES:
        raise _bad("alerts.email.security", block.get("security"), "use one of %s" % ", ".join(SECURITIES))
    default_port = {"starttls": 587, "ssl": 465, "none": 25}[security]
    port = parse_count("monitoring.alerts.email.port", block.get("port", default_port), minimum=1)
    recipients = block["to"] if isinstance(block["to"], list) else [block["to"]]
    if not all(isinstance(r, str) and "@" in r for r in recipients):
        raise _bad("alerts.email.to", block["to"], "expected e-mail addresses")
    return EmailSettings(host=str(block["host"]), port=port, security=security, sender=str(block["from"]),
                         recipients=list(recipients), username=block.get("username") or None,
                         password=_env(env, "BACKUP_SMTP_PASSWORD"), cafile=block.get("cafile") or None)


def _thresholds(block: Mapping[str, Any]) -> HealthThresholds:
    _check_keys(block, "healthChecks", ("enabled", "connectTimeoutSeconds", "diskWarningPercent",
                                        "diskCriticalPercent", "minFreeFulls", "checksum", "drillMaxAge",
                                        "drillRequired", "lastRunMaxAge", "schedule"))
    result = HealthThresholds()
    if "connectTimeoutSeconds" in block:
        result.connect_timeout = int(_number("healthChecks.connectTimeoutSeconds", block["connectTimeoutSeconds"], 1, 600))
    if "diskWarningPercent" in block:
        result.disk_warning_percent = _number("healthChecks.diskWarningPercent", block["diskWarningPercent"], 0, 100)
    if "diskCriticalPercent" in block:
        result.disk_critical_percent = _number("healthChecks.diskCriticalPercent", block["diskCriticalPercent"], 0, 100)
    if result.disk_critical_percent > result.disk_warning_percent:
        raise _bad("healthChecks.diskCriticalPercent", result.disk_critical_percent,
                   "must not exceed diskWarningPercent (%g)" % result.disk_warning_percent)
    if "minFreeFulls" in block:
        result.min_free_fulls = parse_count("monitoring.healthChecks.minFreeFulls", block["minFreeFulls"], minimum=0)
    if "checksum" in block:
        result.checksum = parse_bool("monitoring.healthChecks.checksum", block["checksum"])
    if "drillMaxAge" in block:
        result.drill_max_age_seconds = parse_duration("monitoring.healthChecks.drillMaxAge",
                                                      block["drillMaxAge"]).total_seconds()
    if "drillRequired" in block:
        result.drill_required = parse_bool("monitoring.healthChecks.drillRequired", block["drillRequired"])
    if "lastRunMaxAge" in block:
        result.last_run_max_age_seconds = parse_duration("monitoring.healthChecks.lastRunMaxAge",
                                                         block["lastRunMaxAge"]).total_seconds()
    return result


def parse_listen(text: str) -> tuple:
    """``HOST:PORT`` (``[::1]:9187`` for IPv6) into ``(host, port)``."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("listen address %r is not valid: use HOST:PORT such as 127.0.0.1:9187" % text)
    return host.strip("[]") or "127.0.0.1", int(port)
