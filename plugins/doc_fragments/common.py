# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """The options of plugins/module_utils/common.py:pgbackup_common_argument_spec() (the engine's option table,
    plugins/module_utils/pgbackup/config/options.py), split by what a module does with them.

    Every module accepts every one of them: the action group's C(module_defaults) passes the same options to all
    six modules, so an option one module does not use is documented as such (NO_CONNECTION, UNUSED_WRITE_SETTINGS)
    rather than refused. C(database_url) means something different in each module that uses it, so those modules
    document it themselves. tests/unit/test_options.py checks every module's documentation against the table.

    - DOCUMENTATION (seawall.pgbackup.common): the repository and the configuration file; every module.
    - CLIENT_TOOLS: pg_bin_dir; the modules that run PostgreSQL client tools.
    - NO_CONNECTION: database_url and pg_bin_dir, unused; the modules that never connect (info, retention).
    - ENCRYPTION: encryption and signing as the module that writes backups (pg_backup) uses them.
    - TRUST: the same settings as the modules that read backups use them (what is trusted, which keys read).
    The repository id and the accept_* switches mean the same to every module: DOCUMENTATION has them.
    - UNUSED_WRITE_SETTINGS: encryption_mode and encryption_retired_keys, unused by info, verify, restore, retention.
    """

    DOCUMENTATION = r'''
options:
  backup_dir:
    description:
      - The local backup repository, laid out as C(full/), C(schema/), C(data/), C(globals/) and C(logs/).
      - If not set, the E(BACKUP_DIR) environment variable, then the configuration file's
        C(backup.directory), then C(/var/backups/postgresql) (the roles' directory) are used.
      - Directories are created with mode 0700 and files with mode 0600.
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
  repository_id:
    description:
      - The repository's name, signed into every manifest and bound into every encrypted file; a backup of
        another repository is not trusted.
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
  - Options such as O(backup_dir) and O(database_url) can be set once for every module of this collection with
    C(module_defaults) and the action group C(group/seawall.pgbackup.pgbackup); every module accepts all of
    these shared options, and its documentation says which of them it does not use.
  - Every setting with its environment variable, configuration file key and default is listed in the
    collection's C(docs/configuration.md).
  - The engine is plain Python (standard library only); C(zstd)-compressed backups need the C(zstandard) Python
    library on the managed host, to write them or to read them back.
'''

    CLIENT_TOOLS = r'''
options:
  pg_bin_dir:
    description:
      - Directory holding the PostgreSQL client tools (C(pg_dump), C(pg_dumpall), C(pg_restore), C(psql),
        C(pg_basebackup) and so on) this module runs.
      - If not set, E(BACKUP_PG_BIN_DIR), the configuration file's C(backup.pgBinDir), then the
        installed PostgreSQL versions are searched for client tools at least as new as the server.
    type: path
'''

    NO_CONNECTION = r'''
options:
  database_url:
    description:
      - Not used by this module, which never connects to a database (the engine only parses it, and a monitored
        run names its database in the run record).
      - Accepted so that C(module_defaults) for the whole group C(group/seawall.pgbackup.pgbackup) can set it.
      - Treated as a secret (C(no_log)).
    type: str
  pg_bin_dir:
    description:
      - Not used by this module, which runs no PostgreSQL client tool.
      - Accepted so that C(module_defaults) for the whole group C(group/seawall.pgbackup.pgbackup) can set it.
    type: path
'''

    ENCRYPTION = r'''
options:
  encryption:
    description:
      - Encrypt new backups (the users' E(BACKUP_ENCRYPTION)), after compression, authenticated.
      - If not set, E(BACKUP_ENCRYPTION) and the configuration file's C(backup.encryption) decide.
      - With encryption on, manifests are signed, and existing backups (the one O(max_age) finds, an
        incremental's parent) are trusted only when signed by a configured key and encrypted as configured.
    type: bool
  encryption_mode:
    description:
      - C(aes-256-gcm) (a symmetric key, the default) or C(age) (X25519 public-key encryption) for new backups.
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
      - An age identity file (C(AGE-SECRET-KEY-1...)), mode 0600. Taking an age-mode backup does not need it,
        except an V(incremental) one, which reads its parent's C(backup_manifest).
      - If not set, E(BACKUP_ENCRYPTION_IDENTITY_FILE), then the configuration file's C(backup.encryption.identityFile)
        are used.
    type: path
  encryption_signing_key_file:
    description:
      - An Ed25519 private key file, mode 0600, outside the backup directory, that signs the manifests of new
        backups (C(seawall-pgbackup keygen --signing)); age mode needs one.
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
notes:
  - Encryption with aes-256-gcm needs the C(cryptography) Python library on the managed host, and age
    encryption C(pyrage).
'''

    TRUST = r'''
options:
  encryption:
    description:
      - Whether this repository's backups are encrypted (the users' E(BACKUP_ENCRYPTION)). This module writes no
        backup, so here it decides what is trusted - with it (or with O(encryption_signing_key_file) or
        O(encryption_trusted_signers) set), a manifest must be signed by a configured key and a backup encrypted
        under a configured key or recipient, otherwise it is not trusted (see O(accept_unsigned) and
        O(accept_unencrypted)).
      - If not set, E(BACKUP_ENCRYPTION) and the configuration file's C(backup.encryption) decide.
    type: bool
  encryption_key_file:
    description:
      - An aes-256-gcm key file (64 hex digits), mode 0600, outside the backup directory; backups encrypted
        under it are decrypted, and manifests signed with it checked, with it.
      - A relative name is looked up in E(CREDENTIALS_DIRECTORY) first (systemd credentials).
      - If not set, E(BACKUP_ENCRYPTION_KEY_FILE), then the configuration file's C(backup.encryption.keyFile) are used.
    type: path
  encryption_keyring:
    description:
      - A directory of C(*.key) files; backups and manifest signatures are read with the one their key id names.
      - If not set, E(BACKUP_ENCRYPTION_KEYRING), then the configuration file's C(backup.encryption.keyring) are used.
    type: path
  encryption_recipients:
    description:
      - age public keys (C(age1...)) or files of them; an age-mode backup encrypted to one of them counts as
        encrypted under a configured key. Decrypting it needs O(encryption_identity_file); without it only the
        checksums can be verified.
      - If not set, E(BACKUP_ENCRYPTION_RECIPIENTS) (comma separated), then the configuration file's
        C(backup.encryption.recipients) are used.
    type: list
    elements: str
  encryption_identity_file:
    description:
      - An age identity file (C(AGE-SECRET-KEY-1...)), mode 0600; needed to read age-mode backups beyond their
        checksums (to read back, test-restore or restore them).
      - If not set, E(BACKUP_ENCRYPTION_IDENTITY_FILE), then the configuration file's C(backup.encryption.identityFile)
        are used.
    type: path
  encryption_signing_key_file:
    description:
      - An Ed25519 private key file, mode 0600, outside the backup directory (C(seawall-pgbackup keygen --signing));
        manifests signed with it are trusted here.
      - Of the modules that take no backup, only M(seawall.pgbackup.pg_backup_verify) writes a manifest (its
        result); it signs it with this key, or else with the aes-256-gcm key of O(encryption_key_file) or
        O(encryption_keyring).
      - If not set, E(BACKUP_ENCRYPTION_SIGNING_KEY_FILE), then the configuration file's
        C(backup.encryption.signingKeyFile) are used.
    type: path
  encryption_trusted_signers:
    description:
      - Ed25519 public keys (C(ed25519:...)) or files of them; manifests signed by one of them are trusted here,
        for example on a restore host that holds no signing key.
      - If not set, E(BACKUP_ENCRYPTION_TRUSTED_SIGNERS) (comma separated), then the configuration file's
        C(backup.encryption.trustedSigners) are used.
    type: list
    elements: str
notes:
  - Reading aes-256-gcm encrypted backups needs the C(cryptography) Python library on the managed host, and
    reading age-mode backups C(pyrage).
'''

    UNUSED_WRITE_SETTINGS = r'''
options:
  encryption_mode:
    description:
      - Not used by this module - the mode only decides how new backups are encrypted (M(seawall.pgbackup.pg_backup));
        a backup is read with whatever it was encrypted with.
      - Accepted so that C(module_defaults) for the whole group C(group/seawall.pgbackup.pgbackup) can set it.
    type: str
    choices: [aes-256-gcm, age]
  encryption_retired_keys:
    description:
      - Not used by this module - retired keys are still read like any other, and only
        M(seawall.pgbackup.pg_backup_health) reports what still depends on them.
      - Accepted so that C(module_defaults) for the whole group C(group/seawall.pgbackup.pgbackup) can set it.
    type: list
    elements: str
'''
