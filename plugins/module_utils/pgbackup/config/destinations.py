# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Destination settings from the users' ``backup.destinations`` object and ``BACKUP_S3_*``-style variables.

``{"local": {"enabled": true}, "s3": {"enabled": true, "encryption": true, "bucket": "..."}}``: a key is the
destination's name and, unless ``"type"`` says otherwise, its type (local, s3, azure, gcs), so several
copies of one type can sit side by side (``"s3-dr": {"type": "s3", ...}``). ``local`` without a ``path``
is the backup directory itself (the primary copy); every other enabled destination receives copies.

Credentials never come from here: the environment (``AWS_*``, ``AZURE_STORAGE_*``,
``GOOGLE_APPLICATION_CREDENTIALS``), a 0600 ``credentialsFile`` of ``NAME=value`` lines (a systemd
credential works), or the instance's role. A secret given in the JSON is refused.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from ..core.errors import ConfigError

TYPES = ("local", "s3", "azure", "gcs")
MIB = 1024 * 1024
DEFAULT_TIER = {"azure": "Cool", "gcs": "NEARLINE"}
VERIFY_MODES = ("stream", "size")
SECRET_KEYS = ("accesskeyid", "secretaccesskey", "sessiontoken", "accountkey", "sastoken", "saskey", "password",
               "token", "secret", "clientsecret", "credentials", "privatekey", "key")
KNOWN_KEYS = ("type", "enabled", "bucket", "container", "prefix", "endpoint", "region", "storageClass",
              "accessTier", "encryption", "sse", "kmsKeyId", "account", "path", "project", "partSizeMB",
              "concurrency", "retries", "retryTimeout", "verifyUpload", "serviceChecksum", "credentialsFile",
              "anonymous")
# BACKUP_<TYPE>_<NAME> → JSON key; the variables configure the destination named like the type.
ENV_KEYS = {
    "BUCKET": "bucket", "CONTAINER": "container", "PREFIX": "prefix", "ENDPOINT": "endpoint", "REGION": "region",
    "STORAGE_CLASS": "storageClass", "ACCESS_TIER": "accessTier", "SSE": "sse", "KMS_KEY_ID": "kmsKeyId",
    "ACCOUNT": "account", "PATH": "path", "PROJECT": "project", "CREDENTIALS_FILE": "credentialsFile",
    "ANONYMOUS": "anonymous", "ENABLED": "enabled", "VERIFY_UPLOAD": "verifyUpload",
}
COMMON_ENV = {"BACKUP_UPLOAD_PART_SIZE_MB": "partSizeMB", "BACKUP_UPLOAD_CONCURRENCY": "concurrency",
              "BACKUP_UPLOAD_RETRIES": "retries", "BACKUP_UPLOAD_RETRY_TIMEOUT": "retryTimeout"}


@dataclass
class DestinationSettings:
    name: str
    kind: str
    enabled: bool = True
    bucket: Optional[str] = None  # the container for azure
    prefix: str = ""
    endpoint: Optional[str] = None
    region: Optional[str] = None
    storage_class: Optional[str] = None  # s3 storage class, azure access tier, gcs storage class
    sse: Optional[str] = None
    kms_key_id: Optional[str] = None
    account: Optional[str] = None
    path: Optional[str] = None
    project: Optional[str] = None
    part_size: int = 8 * MIB
    concurrency: int = 4
    retries: int = 8
    retry_timeout: int = 120
    verify_upload: str = "stream"
    service_checksum: bool = False
    credentials_file: Optional[str] = None
    anonymous: bool = False

    @property
    def is_primary(self) -> bool:
        """The backup directory itself (``local`` without a path): not a copy target."""
        return self.kind == "local" and not self.path

    def public(self) -> Dict[str, Any]:
        return {"name": self.name, "type": self.kind, "enabled": self.enabled, "bucket": self.bucket,
                "prefix": self.prefix, "endpoint": self.endpoint, "storage_class": self.storage_class,
                "path": self.path}


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError("%s=%r is not valid: %s" % (key, value, allowed))


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _bad(key, value, "use true or false")


def _int(key: str, value: Any, minimum: int, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _bad(key, value, "expected a whole number") from None
    if not minimum <= number <= maximum:
        raise _bad(key, value, "expected a number from %d to %d" % (minimum, maximum))
    return number


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, value, "expected a non-empty string")
    return value.strip()


def parse_one(name: str, raw: Mapping[str, Any], where: str = "backup.destinations") -> DestinationSettings:
    label = "%s.%s" % (where, name)
    for key in raw:
        if key.lower().replace("_", "") in SECRET_KEYS:
            raise ConfigError("%s.%s: secrets are not accepted in the configuration; use the environment "
                              "(AWS_*, AZURE_STORAGE_*, GOOGLE_APPLICATION_CREDENTIALS), a 0600 credentialsFile "
                              "or the instance's role" % (label, key))
        if key not in KNOWN_KEYS:
            raise _bad("%s.%s" % (label, key), raw[key], "unknown key; known: %s" % ", ".join(KNOWN_KEYS))
    kind = str(raw.get("type") or name).lower()
    if kind not in TYPES:
        raise _bad(label + ".type", raw.get("type", name), "use one of %s (or name the destination like its type)"
                   % ", ".join(TYPES))
    out = DestinationSettings(name=name, kind=kind)
    out.enabled = _bool(label + ".enabled", raw.get("enabled", True))
    for key, attr in (("bucket", "bucket"), ("container", "bucket"), ("endpoint", "endpoint"), ("region", "region"),
                      ("kmsKeyId", "kms_key_id"), ("account", "account"), ("path", "path"), ("project", "project"),
                      ("credentialsFile", "credentials_file")):
        if raw.get(key) not in (None, ""):
            setattr(out, attr, _text("%s.%s" % (label, key), raw[key]))
    if raw.get("prefix") not in (None, ""):
        out.prefix = _text(label + ".prefix", raw["prefix"]).strip("/")
    tier = raw.get("accessTier") or raw.get("storageClass") or DEFAULT_TIER.get(kind)
    if tier:
        out.storage_class = _text(label + ".storageClass", tier)
    if "encryption" in raw and _bool(label + ".encryption", raw["encryption"]) and kind == "s3":
        out.sse = "aws:kms" if out.kms_key_id else "AES256"
    if raw.get("sse"):
        out.sse = _text(label + ".sse", raw["sse"])
        if out.sse not in ("AES256", "aws:kms", "aws:kms:dsse"):
            raise _bad(label + ".sse", raw["sse"], "use AES256, aws:kms or aws:kms:dsse")
    if "partSizeMB" in raw:
        out.part_size = _int(label + ".partSizeMB", raw["partSizeMB"], 5, 5000) * MIB
    if "concurrency" in raw:
        out.concurrency = _int(label + ".concurrency", raw["concurrency"], 1, 64)
    if "retries" in raw:
        out.retries = _int(label + ".retries", raw["retries"], 0, 100)
    if "retryTimeout" in raw:
        out.retry_timeout = _int(label + ".retryTimeout", raw["retryTimeout"], 1, 3600)
    if "verifyUpload" in raw:
        out.verify_upload = str(raw["verifyUpload"]).lower()
        if out.verify_upload not in VERIFY_MODES:
            raise _bad(label + ".verifyUpload", raw["verifyUpload"], "use stream (read back and hash) or size")
    if "serviceChecksum" in raw:
        out.service_checksum = _bool(label + ".serviceChecksum", raw["serviceChecksum"])
    if "anonymous" in raw:
        out.anonymous = _bool(label + ".anonymous", raw["anonymous"])
    if out.endpoint and not out.endpoint.startswith(("http://", "https://")):
        raise _bad(label + ".endpoint", out.endpoint, "expected an http:// or https:// URL")
    return out


def check_complete(out: DestinationSettings) -> None:
    """Checked when the destination is used: a bucket may come from the environment of the timer only."""
    label = "destination %r" % out.name
    if out.kind in ("s3", "gcs") and not out.bucket:
        raise ConfigError("%s: a %s destination needs a bucket (\"bucket\" or BACKUP_%s_BUCKET)"
                          % (label, out.kind, out.kind.upper()))
    if out.kind == "azure" and not out.bucket:
        raise ConfigError("%s: an azure destination needs a container (\"container\" or BACKUP_AZURE_CONTAINER)" % label)


def parse_destinations(raw: Mapping[str, Any], env: Mapping[str, str]) -> List[DestinationSettings]:
    """Every configured destination (enabled or not), the JSON object merged with the environment."""
    merged: Dict[str, Dict[str, Any]] = {name: dict(value) for name, value in raw.items() if isinstance(value, Mapping)}
    for kind in ("s3", "azure", "gcs", "local"):
        found = {key: env[f"BACKUP_{kind.upper()}_{suffix}"] for suffix, key in ENV_KEYS.items()
                 if env.get(f"BACKUP_{kind.upper()}_{suffix}") not in (None, "")}
        if kind == "local" and "path" not in found:
            found.pop("enabled", None)
        if found:
            target = merged.setdefault(kind, {})
            if "enabled" not in found and "enabled" not in target:
                # BACKUP_S3_BUCKET turns the s3 copy on unless the file says otherwise; an endpoint alone does not.
                found["enabled"] = any(k in found for k in ("bucket", "container", "path"))
            target.update(found)
    for var, key in COMMON_ENV.items():
        if env.get(var) not in (None, ""):
            for name, target in merged.items():
                target[key] = env[var]
    out = []
    for name, value in merged.items():
        where = "backup.destinations" if name in raw else "environment"
        out.append(parse_one(name, value, where))
    return out


def remote_destinations(settings: List[DestinationSettings]) -> List[DestinationSettings]:
    """The enabled copy targets (all but the primary backup directory)."""
    return [s for s in settings if s.enabled and not s.is_primary]


def check_private_file(settings: DestinationSettings) -> None:
    path = settings.credentials_file or ""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError("credentialsFile of destination %r: %s: %s" % (settings.name, path, exc.strerror)) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("credentialsFile of destination %r: %s is readable by others (mode %o); chmod 600 it"
                          % (settings.name, path, stat.S_IMODE(info.st_mode)))


def read_credentials_file(settings: DestinationSettings) -> Dict[str, str]:
    """``NAME=value`` lines of a 0600 file (comments and blank lines ignored); {} without a file."""
    if not settings.credentials_file:
        return {}
    check_private_file(settings)
    found: Dict[str, str] = {}
    with open(settings.credentials_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ConfigError("credentialsFile of destination %r: line %d is not NAME=value"
                                  % (settings.name, number))
            key, value = line.split("=", 1)
            found[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return found
