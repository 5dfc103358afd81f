# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """Options of plugins/module_utils/common.py:pgbackup_common_argument_spec(), built from the engine's option
    table (plugins/module_utils/pgbackup/config/options.py); tests/unit/test_options.py checks this against it."""

    DOCUMENTATION = r'''
options:
  database_url:
    description:
      - The database to back up, as a libpq URL C(postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME).
      - If not set, the E(DATABASE_URL) environment variable of the module (set it with the
        C(environment) keyword), then the configuration file's C(backup.databaseUrl) are used.
      - The password never reaches a command line; the client tools get it from a private,
        temporary libpq passfile (mode 0600). You can leave it out of the URL and use your own
        E(PGPASSFILE) or C(~/.pgpass) instead.
      - The value is treated as a secret (C(no_log)); results show the URL without its password.
    type: str
  backup_dir:
    description:
      - The local backup repository, laid out as C(full/), C(schema/), C(data/), C(globals/) and C(logs/).
      - If not set, the E(BACKUP_DIR) environment variable, then the configuration file's
        C(backup.directory), then C(/var/backups/postgresql) (the roles' directory) are used.
      - Directories are created with mode 0700 and files with mode 0600.
    type: path
  pg_bin_dir:
    description:
      - Directory holding the PostgreSQL client tools (C(pg_dump), C(pg_dumpall), C(psql)) to use.
      - If not set, E(BACKUP_PG_BIN_DIR), the configuration file's C(backup.pgBinDir), then the
        installed PostgreSQL versions are searched for client tools at least as new as the server.
    type: path
  config_file:
    description:
      - >-
        A JSON configuration file of the shape C({"backup": {"types": ..., "destinations": ..., "monitoring": ...}}),
        the same file the C(seawall-pgbackup) command reads.
      - If not set, the E(BACKUP_CONFIG) environment variable is used.
      - Precedence, lowest first, is the built-in defaults, this file, the environment variables of
        the module (E(BACKUP_COMPRESSION), E(BACKUP_ENCRYPTION), E(BACKUP_JOBS) and so on), then
        the module's options.
    type: path
  encryption:
    description:
      - Encrypt new backups (the users' E(BACKUP_ENCRYPTION)), after compression, authenticated.
      - If not set, E(BACKUP_ENCRYPTION) and the configuration file's C(backup.encryption) decide.
      - Reading encrypted backups (verify, restore) needs the key whatever this option says.
    type: bool
  encryption_mode:
    description:
      - C(aes-256-gcm) (a symmetric key, the default) or C(age) (X25519 public-key encryption).
      - If not set, E(BACKUP_ENCRYPTION_MODE), then the configuration file's C(backup.encryption.mode) are used.
    type: str
    choices: [aes-256-gcm, age]
  encryption_key_file:
    description:
      - An aes-256-gcm key file (64 hex digits), mode 0600, outside the backup directory; new backups use it.
      - A relative name is looked up in E(CREDENTIALS_DIRECTORY) first (systemd credentials).
      - If not set, E(BACKUP_ENCRYPTION_KEY_FILE), then the configuration file's C(backup.encryption.keyFile) are used.
    type: path
  encryption_keyring:
    description:
      - A directory of C(*.key) files; reads find any of them by key id, and without O(encryption_key_file)
        new backups use the newest (the name that sorts last).
      - If not set, E(BACKUP_ENCRYPTION_KEYRING), then the configuration file's C(backup.encryption.keyring) are used.
    type: path
  encryption_recipients:
    description:
      - age public keys (C(age1...)) or files of them; age-mode backups are encrypted to all of them.
      - If not set, E(BACKUP_ENCRYPTION_RECIPIENTS) (comma separated), then the configuration file's
        C(backup.encryption.recipients) are used.
    type: list
    elements: str
  encryption_identity_file:
    description:
      - An age identity file (C(AGE-SECRET-KEY-1...)), mode 0600; needed only to verify or restore age-mode backups.
      - If not set, E(BACKUP_ENCRYPTION_IDENTITY_FILE), then the configuration file's C(backup.encryption.identityFile)
        are used.
    type: path
  encryption_signing_key_file:
    description:
      - An Ed25519 private key file, mode 0600, outside the backup directory, that signs manifests on the backup
        host (C(seawall-pgbackup keygen --signing)); age mode needs one.
      - If not set, E(BACKUP_ENCRYPTION_SIGNING_KEY_FILE), then the configuration file's
        C(backup.encryption.signingKeyFile) are used.
    type: path
  encryption_trusted_signers:
    description:
      - Ed25519 public keys (C(ed25519:...)) or files of them; manifests signed by one of them are trusted here.
      - If not set, E(BACKUP_ENCRYPTION_TRUSTED_SIGNERS) (comma separated), then the configuration file's
        C(backup.encryption.trustedSigners) are used.
    type: list
    elements: str
  encryption_retired_keys:
    description:
      - Key ids that are retired; still read, never written, and the health check warns while a backup or a copy
        at a destination still needs one.
      - If not set, E(BACKUP_ENCRYPTION_RETIRED_KEYS) (comma separated), then the configuration file's
        C(backup.encryption.retiredKeys) are used.
    type: list
    elements: str
  repository_id:
    description:
      - The repository's name, signed into every manifest and bound into every encrypted file; a backup of
        another repository is refused.
      - If not set, E(BACKUP_REPOSITORY_ID), then the configuration file's C(backup.repository), then C(default).
    type: str
  accept_unsigned:
    description:
      - Also trust manifests without a signature (written by versions before manifests were signed), to migrate
        them once with C(seawall-pgbackup rekey --all --accept-unsigned).
      - If not set, E(BACKUP_ACCEPT_UNSIGNED), then C(false).
    type: bool
  accept_unencrypted:
    description:
      - Also trust backups that are not encrypted, or not under a configured key or recipient, although
        encryption is configured.
      - If not set, E(BACKUP_ACCEPT_UNENCRYPTED), then C(false).
    type: bool
notes:
  - The options O(database_url) and O(backup_dir) can be set once for every module of this
    collection with C(module_defaults) and the action group C(group/seawall.pgbackup.pgbackup).
  - Every setting with its environment variable, configuration file key and default is listed in the
    collection's C(docs/configuration.md).
  - The engine is plain Python (standard library only); C(zstd) compression needs the
    C(zstandard) Python library on the managed host, aes-256-gcm encryption C(cryptography) and age C(pyrage).
'''
