# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """Options of plugins/module_utils/common.py:pgbackup_common_argument_spec()."""

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
        C(backup.directory), then C(./backups) (relative to the module's working directory) are used.
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
notes:
  - The options O(database_url) and O(backup_dir) can be set once for every module of this
    collection with C(module_defaults) and the action group C(group/seawall.pgbackup.pgbackup).
  - The engine is plain Python (standard library only); C(zstd) compression needs the
    C(zstandard) Python library on the managed host.
'''
