# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notifications: e-mail (smtplib), Slack, Discord and custom webhooks (urllib), dead-man's-switch pings.

Standard library only (docs/monitoring.md says why not apprise). Every delivery has a timeout; a
delivery that fails is reported back as a short reason without the channel's URL or credentials,
and never raises: a notification can not turn a good backup into a failure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any, Dict, List, Optional, Tuple

from ..config.monitoring import EmailSettings, MonitoringSettings, WebhookSettings

USER_AGENT = "seawall-pgbackup"
DISCORD_LIMIT = 2000
SLACK_LIMIT = 3500
TIMESTAMP_HEADER = "X-Seawall-Timestamp"

HINTS = {
    "config": "Fix the configuration value named in the error, then run the job again by hand.",
    "connect": "Check that the server is up and reachable from this host, that DATABASE_URL names the right "
               "host, port, user and database, and the password in the passfile; try psql with the same URL.",
    "client-tools": "Install PostgreSQL client tools at least as new as the server (or set BACKUP_PG_BIN_DIR).",
    "lock": "Another seawall-pgbackup run holds the repository lock; if none is running, look for a hung process.",
    "space": "Free disk space in the backup directory (run cleanup, lower retention) or move it to a larger disk.",
    "prepare": "Check ownership and permissions of the backup directory (the backup user must own it).",
    "verify": "A backup is damaged or incomplete: take a new full backup now and investigate the storage.",
    "dump": "pg_dump failed: read its error in the log excerpt (permissions of the backup role, locks, disk).",
    "globals": "pg_dumpall --globals-only failed: the backup role may lack the rights to read roles.",
    "interrupted": "The run was stopped (timeout or shutdown): check the job timeout and run it again.",
    "health": "Run seawall-pgbackup health on the host and act on the checks that are not OK.",
}
DEFAULT_HINT = ("Run the same seawall-pgbackup command by hand as the backup user and read logs/backup.log "
                "and logs/backup-failures.log in the backup directory.")


def hint_for(step: Optional[str]) -> str:
    return HINTS.get(step or "", DEFAULT_HINT)


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 20] + "\n... (truncated)"


def message_text(event: Dict[str, Any], limit: Optional[int] = None) -> str:
    """The human text shared by every channel."""
    lines = [event["title"], "",
             "host: %s" % event["host"],
             "database: %s" % (event.get("database") or "-"),
             "kind: %s" % (event.get("kind") or "-"),
             "job: %s" % event["job"],
             "status: %s" % event["status"]]
    if event.get("error"):
        lines.append("what failed: %s (step %s)" % (event["error"], event.get("step") or "-"))
    if event.get("summary"):
        lines.append(event["summary"])
    if event.get("hint"):
        lines.append("what to do: %s" % event["hint"])
    lines.append("started: %s, took %.1f s" % (event.get("started_at"), event.get("duration_seconds") or 0))
    if event.get("log_excerpt"):
        lines += ["", "log excerpt:", event["log_excerpt"]]
    text = "\n".join(lines)
    return _trim(text, limit) if limit else text


# ----------------------------------------------------------------------------- channels

def send_email(settings: EmailSettings, event: Dict[str, Any], timeout: float) -> None:
    message = EmailMessage()
    message["Subject"] = event["title"]
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["X-Seawall-Event"] = event["event"]
    message.set_content(message_text(event))
    context = ssl.create_default_context(cafile=settings.cafile)
    if settings.security == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    try:
        if settings.security == "starttls":
            client.starttls(context=context)
        if settings.username:
            client.login(settings.username, settings.password or "")
        client.send_message(message)
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` (receivers recompute it, then compare)."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


def webhook_request(hook: WebhookSettings, event: Dict[str, Any]) -> Tuple[bytes, Dict[str, str]]:
    """The body and headers one webhook receives."""
    if hook.style == "slack":
        document: Dict[str, Any] = {"text": message_text(event, SLACK_LIMIT)}
    elif hook.style == "discord":
        document = {"content": message_text(event, DISCORD_LIMIT), "allowed_mentions": {"parse": []}}
    else:
        document = {k: v for k, v in event.items() if k != "title"}
        document["title"] = event["title"]
    body = json.dumps(document, sort_keys=True).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    headers.update(hook.headers)
    if hook.style == "json" and hook.secret:
        stamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = stamp
        headers[hook.signature_header] = signature(hook.secret, stamp, body)
    return body, headers


def http_post(url: str, body: bytes, headers: Dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    # build_opener: the default handlers (proxies from the environment, redirects, https with system CAs)
    with urllib.request.build_opener().open(request, timeout=timeout) as response:  # http/https checked at load
        response.read(65536)


def describe_failure(exc: BaseException) -> str:
    """A reason without the URL (Slack's and Discord's URLs are the secret)."""
    if isinstance(exc, urllib.error.HTTPError):
        return "HTTP %d %s" % (exc.code, exc.reason)
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return "cannot connect: %s" % (getattr(reason, "strerror", None) or reason)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "SMTP authentication failed (%d)" % exc.smtp_code
    if isinstance(exc, smtplib.SMTPResponseException):
        return "SMTP error %d" % exc.smtp_code
    if isinstance(exc, (TimeoutError, OSError)) and getattr(exc, "strerror", None):
        return str(exc.strerror)
    return exc.__class__.__name__ + (": %s" % exc if str(exc) and "://" not in str(exc) else "")


def deliver(settings: MonitoringSettings, event: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Send ``event`` to every channel once; one result per channel, never raising."""
    results = []
    targets: List[Tuple[str, Any]] = [("email", settings.email)] if settings.email else []
    targets += [(hook.name, hook) for hook in settings.webhooks]
    for name, target in targets:
        try:
            if isinstance(target, EmailSettings):
                send_email(target, event, settings.timeout)
            else:
                body, headers = webhook_request(target, event)
                http_post(target.url, body, headers, settings.timeout)
            results.append({"channel": name, "ok": True})
        except Exception as exc:  # pylint: disable=broad-except  # any failure: reported, never raised
            results.append({"channel": name, "ok": False, "error": describe_failure(exc)})
    return results


def ping(settings: MonitoringSettings, phase: str, body: str = "") -> Optional[str]:
    """A healthchecks.io-style ping: ``<url>/start``, ``<url>`` (success), ``<url>/fail``; the error or None."""
    if not settings.deadmans_url:
        return None
    url = settings.deadmans_url + {"start": "/start", "success": "", "fail": "/fail"}[phase]
    try:
        http_post(url, body.encode("utf-8")[:100000], {"Content-Type": "text/plain; charset=utf-8",
                                                       "User-Agent": USER_AGENT}, settings.timeout)
    except Exception as exc:  # pylint: disable=broad-except
        return describe_failure(exc)
    return None
