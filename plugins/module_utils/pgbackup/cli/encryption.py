# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rekey`` and ``keygen`` subcommands (cli/main.py adds them with ``add_encryption_commands``)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict

from ..config.settings import ALL_KINDS
from ..core.errors import ConfigError


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def add_encryption_commands(sub) -> None:
    rekey = sub.add_parser("rekey", help="re-encrypt backups to the newest key (verified before the old copy goes)")
    rekey.add_argument("backup", nargs="*", help="backup ids or paths (default: every backup the filters select)")
    rekey.add_argument("--type", dest="kind", choices=ALL_KINDS)
    rekey.add_argument("--before", metavar="TIME", help="only backups started before TIME (ISO 8601)")
    rekey.add_argument("--all", dest="everything", action="store_true", help="every good backup")
    rekey.add_argument("--dry-run", action="store_true", help="print what would be re-encrypted; change nothing")
    rekey.add_argument("--json", action="store_true")

    keygen = sub.add_parser("keygen", help="create a new key: an aes-256-gcm key in the keyring, or an age identity")
    keygen.add_argument("--keyring", help="keyring directory (default: $BACKUP_ENCRYPTION_KEYRING)")
    keygen.add_argument("--age", metavar="IDENTITY_FILE",
                        help="write a new age identity (0600) to this file and print its public recipient")
    keygen.add_argument("--signing", action="store_true",
                        help="write a new Ed25519 manifest signing key (0600) to --output and print its public key")
    keygen.add_argument("--output", metavar="FILE", help="where --signing writes the private key")
    keygen.add_argument("--json", action="store_true")


def _cmd_rekey(cfg, args) -> int:
    from ..ops.rekey import plan_rekey, rekey  # pylint: disable=import-outside-toplevel

    operation = plan_rekey if args.dry_run else rekey
    results = operation(cfg, args.backup, kind=args.kind, before=args.before, everything=args.everything)
    if args.json:
        _out(json.dumps(results, indent=2, sort_keys=True))
        return 0
    for row in results:
        verb = ("WOULD  " if args.dry_run else "REKEYED") if row["changed"] else "KEPT   "
        _out("%s %s: %s" % (verb, row["id"], row["details"]))
    if not results:
        _out("no backups selected")
    return 0


def _cmd_keygen(cfg, args) -> int:
    if args.signing:
        from ..codec.authn import write_signing_key  # pylint: disable=import-outside-toplevel

        if not args.output:
            raise ConfigError("keygen --signing needs --output FILE (the private key, kept on the backup host)")
        result = write_signing_key(args.output, cfg.backup_dir)
        if args.json:
            _out(json.dumps(result, indent=2, sort_keys=True))
        else:
            _out("created Ed25519 signing key id %s in %s" % (result["key_id"], result["path"]))
            _out("public key (for BACKUP_ENCRYPTION_TRUSTED_SIGNERS on restore hosts):")
            _out(result["public_key"])
        return 0
    if args.age:
        result = write_age_identity(args.age, cfg.backup_dir)
    else:
        from ..codec.keyring import write_key_file  # pylint: disable=import-outside-toplevel

        directory = args.keyring or cfg.encryption_keyring
        if not directory:
            raise ConfigError("keygen needs a keyring directory: --keyring DIR or BACKUP_ENCRYPTION_KEYRING")
        result = write_key_file(directory, cfg.backup_dir)
    if args.json:
        _out(json.dumps(result, indent=2, sort_keys=True))
    else:
        _out("created %s key id %s in %s" % (result["mode"], result["key_id"], result["path"]))
        if result.get("recipient"):
            _out("recipient (public, for BACKUP_ENCRYPTION_RECIPIENTS on backup hosts): %s" % result["recipient"])
    return 0


def write_age_identity(path: str, backup_dir: str) -> Dict[str, Any]:
    """A new age X25519 identity in age's file format, 0600; never overwrites a file."""
    from ..codec.crypto import _pyrage, age_key_id  # pylint: disable=import-outside-toplevel

    identity = _pyrage().x25519.Identity.generate()
    recipient = str(identity.to_public())
    path = os.path.abspath(path)
    root = os.path.realpath(backup_dir)
    if os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep):
        raise ConfigError("identity file %s is inside the backup directory %s: keep keys apart from the backups"
                          % (path, root))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError("identity file %s exists: choose a new name (keygen never overwrites a key)" % path) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# created by seawall-pgbackup keygen\n# public key: %s\n%s\n" % (recipient, identity))
        handle.flush()
        os.fsync(handle.fileno())
    return {"mode": "age", "key_id": age_key_id(recipient), "path": path, "recipient": recipient}


ENCRYPTION_COMMANDS: Dict[str, Callable[[Any, Any], int]] = {"rekey": _cmd_rekey, "keygen": _cmd_keygen}
