# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption settings from the environment, the JSON file and options (settings.py calls these).

Every setting and variable is a row of the option table (config/options.py). Environment: ``BACKUP_ENCRYPTION``
(true/false, the users' switch), ``BACKUP_ENCRYPTION_MODE`` (aes-256-gcm | age), ``BACKUP_ENCRYPTION_KEY_FILE``,
``BACKUP_ENCRYPTION_KEYRING``, ``BACKUP_ENCRYPTION_RECIPIENTS`` (age1... keys or files of them, comma separated),
``BACKUP_ENCRYPTION_IDENTITY_FILE``. JSON: ``"encryption": true`` or an object
``{"enabled", "mode", "keyFile", "keyring", "recipients", "identityFile"}``.
Nothing here reads a key: files are checked when a backup or restore needs them.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Mapping

from ..core.errors import ConfigError
from .options import OPTIONS

MODES = ("aes-256-gcm", "age")
_MODE_ALIASES = {"aes-256-gcm": "aes-256-gcm", "aes": "aes-256-gcm", "aes256": "aes-256-gcm",
                 "symmetric": "aes-256-gcm", "age": "age", "x25519": "age", "public-key": "age"}
_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_SIGNER = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# The keys of the JSON "encryption" object -> setting, from the option table (which also lists the variables,
# read by settings.apply_env).
JSON = dict({"enabled": "encryption"}, **{o.json.split(".", 1)[1]: o.name for o in OPTIONS
                                          if o.parsed_by == "encryption" and o.json and "." in o.json})


def _where(where: str) -> str:
    return " (in %s)" % where if where else ""


def parse_mode(key: str, value: Any, where: str = "") -> str:
    text = str(value).strip().lower()
    if text not in _MODE_ALIASES:
        raise ConfigError("%s=%r%s is not valid: use aes-256-gcm or age" % (key, value, _where(where)))
    return _MODE_ALIASES[text]


def _public_keys(key: str, value: Any, where: str, prefix: str, pattern: Any, what: str) -> List[str]:
    """Public keys starting with ``prefix``, given inline or as files of them (one a line, # comments); comma or
    space separated. ``what`` describes a valid one in the message."""
    items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
    found: List[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if item.startswith(prefix):
            if not pattern.match(item):
                raise ConfigError("%s%s: %r is not a valid %s" % (key, _where(where), item[:80], what))
            found.append(item)
            continue
        try:
            with open(item, encoding="utf-8") as handle:
                lines = [ln.strip() for ln in handle if ln.strip() and not ln.strip().startswith("#")]
        except OSError as exc:
            raise ConfigError("%s%s: %r is neither a %s... key nor a readable file of them: %s"
                              % (key, _where(where), item[:80], prefix, exc.strerror)) from None
        found.extend(_public_keys("%s file %s" % (key, item), lines, "", prefix, pattern, what))
    return found


def parse_recipients(key: str, value: Any, where: str = "") -> List[str]:
    """age1... public keys (the recipients new age-mode backups are encrypted to)."""
    return _public_keys(key, value, where, "age1", _RECIPIENT, "age X25519 recipient (age1 and 58 bech32 characters)")


def parse_signers(key: str, value: Any, where: str = "") -> List[str]:
    """ed25519:<base64 of 32 bytes> public keys (the signers whose manifests are trusted)."""
    return _public_keys(key, value, where, "ed25519:", _SIGNER,
                        "Ed25519 public key (ed25519: and 43 base64 characters and =)")


def parse_key_ids(key: str, value: Any, where: str = "") -> List[str]:
    """Key ids (16 hex digits, as `keygen`, `list` and the manifests show them), comma or space separated."""
    items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
    found: List[str] = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        if not _KEY_ID.match(item):
            raise ConfigError("%s%s: %r is not a key id (16 hex digits)" % (key, _where(where), item[:80]))
        found.append(item)
    return found


def apply_encryption_setting(cfg, name: str, value: Any, key: str = "", where: str = "") -> None:
    """Set one ``encryption_*`` field of ``cfg``; ``key`` names the setting in messages."""
    key = key or name
    if value is None:
        return
    if name == "encryption":
        text = str(value).strip().lower() if not isinstance(value, bool) else ("true" if value else "false")
        if text not in _TRUE + _FALSE:
            raise ConfigError("%s=%r%s is not valid: use true or false" % (key, value, _where(where)))
        cfg.encryption = text in _TRUE
    elif name == "encryption_mode":
        cfg.encryption_mode = parse_mode(key, value, where)
    elif name == "encryption_recipients":
        cfg.encryption_recipients = parse_recipients(key, value, where)
    elif name == "encryption_trusted_signers":
        cfg.encryption_trusted_signers = parse_signers(key, value, where)
    elif name == "encryption_retired_keys":
        cfg.encryption_retired_keys = parse_key_ids(key, value, where)
    elif name in ("encryption_key_file", "encryption_keyring", "encryption_identity_file",
                  "encryption_signing_key_file"):
        text = str(value).strip()
        setattr(cfg, name, os.path.expanduser(text) if text else None)
    else:
        raise ConfigError("unknown setting %r" % name)


def apply_encryption_json(cfg, value: Any, where: str) -> None:
    """``"encryption": true`` (the users' shape) or an object with the mode and where the keys are."""
    if not isinstance(value, Mapping):
        apply_encryption_setting(cfg, "encryption", value, "backup.encryption", where)
        return
    for name, setting in value.items():
        if name not in JSON:
            raise ConfigError("backup.encryption.%s=%r (in %s) is not valid: unknown key; known: %s"
                              % (name, setting, where, ", ".join(sorted(JSON))))
    cfg.encryption = True  # an object means: encrypt, unless it says "enabled": false
    for name, setting in value.items():
        apply_encryption_setting(cfg, JSON[name], setting, "backup.encryption.%s" % name, where)
