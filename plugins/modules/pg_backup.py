#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup
short_description: Take a PostgreSQL backup (logical, or a physical base backup) unless a recent one exists
version_added: 0.1.0
description:
  - Takes one backup of one database into a seawall backup repository with C(pg_dump) (custom format)
    and, for O(type=full) and O(type=globals), C(pg_dumpall --globals-only); for O(type=base), the whole
    cluster with C(pg_basebackup).
  - The backup's data files are compressed and hashed (sha256) while they are written; its manifest
    C(<id>.json) is written last. A data file without a manifest is an incomplete backup, never
    listed or restored, and removed by the next run.
  - Idempotent through O(max_age) - when a good backup of this type of this database is younger
    than O(max_age), nothing is taken and the result is C(changed=false). O(force=true) always takes one.
  - One run per repository at a time - a second concurrent run fails at step C(lock).
  - The same engine runs as the C(seawall-pgbackup) command on hosts, so backups taken by timers
    and by this module share one catalog and one format.
  - A run that takes a backup is monitored exactly like a timer's C(seawall-pgbackup create) - it writes
    the run record C(logs/last-run-create-<type>.json), refreshes the metrics textfile, sends the configured
    notifications (C(backup.monitoring.alerts) of O(config_file) and the E(BACKUP_*) variables of the
    module's environment) and pings the dead-man's switch. Check mode and a run skipped by O(max_age) take
    no backup and are not recorded.
author:
  - Seawall Platform Team (@seawall)
extends_documentation_fragment:
  - seawall.pgbackup.common
  - seawall.pgbackup.common.client_tools
  - seawall.pgbackup.common.encryption
attributes:
  check_mode:
    support: full
    description:
      - Reports whether a backup would be taken (C(changed)) and takes nothing.
      - When one would be taken, it connects and fails as the run would (server unreachable, authentication,
        missing privileges, no suitable client tools, a repository it cannot write, missing keys), so check
        mode is a preflight; RV(preflight) lists what was checked.
  diff_mode:
    support: full
    description: Shows the newest good backup of the type before and after the run.
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
  encryption_retired_keys:
    description:
      - Not used when a backup is taken - retired keys are still read like any other, and
        M(seawall.pgbackup.pg_backup_health) reports what still depends on them (and whether new backups are still
        encrypted with one).
      - Accepted so that C(module_defaults) for the whole group C(group/seawall.pgbackup.pgbackup) can set it.
    type: list
    elements: str
  type:
    description:
      - The kind of backup.
      - V(full) is the whole database (schema and data) plus the cluster's roles and tablespaces (globals).
      - V(schema) is the structure only, V(data) the rows only, V(globals) the roles and tablespaces only.
      - V(base) is a physical backup of the whole cluster with C(pg_basebackup) (one tar holding the data
        directory, the WAL it needs and its backup_manifest); the role needs REPLICATION (or superuser).
        It is restored into a new data directory (C(seawall-pgbackup restore <id> --pgdata DIR) or
        M(seawall.pgbackup.pg_backup_restore) O(seawall.pgbackup.pg_backup_restore#module:pgdata)).
      - V(incremental) is the next link of the cluster's newest good V(base) or V(incremental) backup (its
        parent). On PostgreSQL 17+ with C(summarize_wal=on) it is C(pg_basebackup --incremental) against the
        parent's backup_manifest (method C(physical), C(incremental=native)); otherwise (15, 16, or
        C(summarize_wal=off)) the server must archive its WAL with C(seawall-pgbackup wal-push) and the link
        records the WAL archived since the parent after a forced segment switch (method C(wal),
        C(incremental=wal); the role needs EXECUTE on C(pg_switch_wal()) or superuser). The returned
        RV(backup.incremental) says which one the host gets.
      - If not set, E(BACKUP_TYPE) in the module's environment, then V(full) - the same order as the
        C(seawall-pgbackup) command.
    type: str
    choices: [full, schema, data, globals, base, incremental]
  max_age:
    description:
      - Take no backup when a good backup of this O(type) of this database is younger than this.
      - A duration such as V(30m), V(20h), V(2d), V(1w) or V(1d12h), or a number of seconds (V(3600)).
        Units are V(s), V(m), V(h), V(d) and V(w).
      - V(0) (the default) means there is no such window - every run takes a backup and reports a
        change. Set it (for example to V(20h) for a daily schedule) to make repeated runs idempotent.
    type: raw
    default: 0
  force:
    description:
      - Take a backup even when a good one younger than O(max_age) exists.
    type: bool
    default: false
  destinations:
    description:
      - Copy destinations for this run, merged over the configuration file's C(backup.destinations)
        and the E(BACKUP_S3_BUCKET)-style variables.
      - Each item has a C(type) (V(local) with a C(path), V(s3), V(azure) or V(gcs)), an optional C(name)
        (default the type) and the settings described in C(docs/storage.md) such as C(bucket),
        C(container), C(prefix), C(endpoint), C(storageClass), C(accessTier) or C(encryption).
      - After the backup is complete, its files are uploaded to each enabled destination, checked, and
        the manifest is uploaded last; a failed copy fails the task but keeps the local backup.
      - Credentials are never given here; they come from the module's environment (E(AWS_ACCESS_KEY_ID),
        E(AZURE_STORAGE_ACCOUNT_KEY), E(GOOGLE_APPLICATION_CREDENTIALS), ...), a 0600 C(credentialsFile)
        or the host's instance role.
    type: list
    elements: dict
  compression:
    description:
      - How the data files are compressed; V(gzip) and V(zstd) files are read back by the standard
        C(gzip -d) and C(zstd -d) tools.
      - If not set, the environment variable E(BACKUP_COMPRESSION), then the configuration file, then
        V(gzip) are used.
      - V(zstd) needs the C(zstandard) Python library on the managed host.
    type: str
    choices: [gzip, zstd, none]
  compression_level:
    description:
      - Compression level, 1 to 9 for V(gzip) and 1 to 22 for V(zstd).
      - If not set, gzip uses the fast ISA-L deflate at level 2 when the C(isal) Python library is
        installed (zlib level 6 otherwise), and zstd uses level 3. Gzip levels 1 to 3 use ISA-L when available.
    type: int
requirements:
  - PostgreSQL client tools (C(pg_dump), C(pg_dumpall), C(psql)) of at least the server's major version on the managed host.
seealso:
  - module: seawall.pgbackup.pg_backup_info
notes:
  - Returned paths are on the managed host.
  - Restore a full backup with C(seawall-pgbackup restore <id> --target-url postgresql://USER@HOST:PORT/NEWDB --with-globals),
    or with PostgreSQL's own tools alone - C(gzip -dc <id>.dump.gz | pg_restore -d NEWDB).
'''

EXAMPLES = r'''
- name: Take a full backup unless one younger than 20 hours exists
  seawall.pgbackup.pg_backup:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    type: full
    max_age: 20h

- name: Take a schema-only backup now, compressed with zstd
  seawall.pgbackup.pg_backup:
    backup_dir: /var/backups/postgresql
    type: schema
    compression: zstd
    force: true
  environment:
    DATABASE_URL: "{{ vault_database_url }}"

- name: Set the connection once for every seawall.pgbackup module
  module_defaults:
    group/seawall.pgbackup.pgbackup:
      database_url: "{{ vault_database_url }}"
      backup_dir: /var/backups/postgresql
  block:
    - name: Back up the roles and tablespaces once a day
      seawall.pgbackup.pg_backup:
        type: globals
        max_age: 1d
      register: globals_backup

    - name: Show where it went
      ansible.builtin.debug:
        msg: "{{ globals_backup.backup.files }}"
'''

RETURN = r'''
copies:
  description: The copies this run made (destination name, type, URI of the manifest, time).
  returned: when a backup was taken
  type: list
  elements: dict
backup:
  description:
    - The backup taken by this run, or when none was needed the existing good backup that made the
      run skip it. V(null) in check mode when a backup would be taken.
  returned: success
  type: dict
  contains:
    id:
      description: The backup's id, unique in the repository.
      type: str
      sample: full-vtt-20260126T020000Z
    type:
      description: The kind of backup.
      type: str
      sample: full
    database:
      description: The database backed up.
      type: str
      sample: vtt
    created_at:
      description: When the backup started (UTC, ISO 8601).
      type: str
      sample: "2026-01-26T02:00:00.123456Z"
    finished_at:
      description: When the backup finished (UTC, ISO 8601).
      type: str
      sample: "2026-01-26T02:00:04.654321Z"
    size:
      description: Total size in bytes of the backup's data files.
      type: int
      sample: 103549
    sha256:
      description: The sha256 of the main data file.
      type: str
      sample: b1a553be36cb4587599ba663427565bd03b864091cebb9ec8fb6cbb43684bb74
    compression:
      description: The compression of the data files.
      type: str
      sample: gzip
    server_version:
      description: The PostgreSQL server version backed up.
      type: str
      sample: "15.18"
    legacy_format:
      description: V(true) when the backup is encrypted in the format of versions before files were bound to their
        backup (still readable; C(seawall-pgbackup rekey) rewrites it).
      type: bool
      sample: false
    signed_by:
      description: The key id whose signature the manifest carries, V(null) when it is not signed.
      type: str
      sample: 5e2abbef7ea476f9
    method:
      description: V(logical) (pg_dump, pg_dumpall), V(physical) (pg_basebackup - type V(base) and native
        incrementals) or V(wal) (an incremental that is the WAL archived since its parent).
      type: str
      sample: logical
    parent:
      description: The id of the backup an incremental builds on (V(null) for every other type).
      type: str
      sample: base-vtt-20260126T020000Z
    incremental:
      description: How an incremental was taken - V(native) (C(pg_basebackup --incremental), PostgreSQL 17+ with
        C(summarize_wal=on)) or V(wal) (the archived WAL from the parent's end to a forced segment switch);
        V(null) for every other type.
      type: str
      sample: native
    start_lsn:
      description: A base backup's first WAL location (from its backup_manifest); V(null) for logical backups.
      type: str
      sample: 0/2000028
    stop_lsn:
      description: A base backup's last WAL location; the backup holds the WAL in between (V(null) if logical).
      type: str
      sample: 0/2000100
    timeline:
      description: The timeline of a base backup's WAL (V(null) for logical backups).
      type: int
      sample: 1
    files:
      description: Paths of the data files on the managed host.
      type: list
      elements: str
      sample:
        - /var/backups/postgresql/full/full-vtt-20260126T020000Z.dump.gz
        - /var/backups/postgresql/full/full-vtt-20260126T020000Z.globals.sql.gz
    manifest:
      description: Path of the manifest on the managed host.
      type: str
      sample: /var/backups/postgresql/full/full-vtt-20260126T020000Z.json
    verification:
      description: The last recorded verification, V(null) when never verified.
      type: dict
    good:
      description: Whether the backup counts as good (complete and not failed verification).
      type: bool
      sample: true
skipped_reason:
  description: Why no backup was taken; V(null) when one was taken (or would be, in check mode).
  returned: success
  type: str
  sample: a good full backup of vtt (full-vtt-20260126T020000Z) is 2h5m old, younger than max_age 20h
age_seconds:
  description: Age in seconds of the newest good backup of this type before the run; V(null) when there was none.
  returned: success
  type: int
  sample: 7500
database:
  description: The database the backup is of.
  returned: success
  type: str
  sample: vtt
preflight:
  description: In check mode, when a backup would be taken, what was checked (repository, connection, parent,
    client tools).
  returned: check mode, when a backup would be taken
  type: list
  elements: str
  sample: ["backup directory /var/backups/postgresql writable", "connected to server db1:5432, database app,
    user backup as backup (PostgreSQL 15)", "client tools 15.18 in /usr/lib/postgresql/15/bin"]
backup_dir:
  description: The absolute path of the backup repository on the managed host.
  returned: success
  type: str
  sample: /var/backups/postgresql
restore_command:
  description: A command that restores RV(backup) into a new database (a base backup into a new data directory)
    with the C(seawall-pgbackup) tool.
  returned: when RV(backup) is set
  type: str
  sample: seawall-pgbackup --backup-dir /var/backups/postgresql restore full-vtt-20260126T020000Z --target-url postgresql://USER@HOST:PORT/NEWDB --with-globals
step:
  description: The step that failed (for example V(config), V(connect), V(client-tools), V(dump), V(lock)).
  returned: failure
  type: str
  sample: connect
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    engine_errors,
    pgbackup_common_argument_spec,
    pgbackup_config,
    run_operation,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.backup import (
    BackupOutcome,
    plan_backup,
    preflight_backup,
    restore_command,
    run_backup,
)


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        type=dict(type='str', choices=['full', 'schema', 'data', 'globals', 'base', 'incremental']),
        max_age=dict(type='raw', default=0),
        force=dict(type='bool', default=False),
        destinations=dict(type='list', elements='dict'),
        compression=dict(type='str', choices=['gzip', 'zstd', 'none']),
        compression_level=dict(type='int'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cfg = pgbackup_config(module, backup_type=module.params['type'], compression=module.params['compression'],
                          compression_level=module.params['compression_level'],
                          destinations=module.params['destinations'])
    kind = cfg.backup_type  # the option, else BACKUP_TYPE, else full: the engine decides, as for the command
    backup_dir = os.path.abspath(cfg.backup_dir)
    result = dict(changed=False, backup=None, skipped_reason=None, age_seconds=None, database=None,
                  backup_dir=backup_dir)

    with engine_errors(module, **result):
        plan = plan_backup(cfg, kind, max_age=module.params['max_age'], force=module.params['force'])
    result.update(database=plan.database, age_seconds=plan.age_seconds)
    before = dict(newest_backup=plan.newest.id if plan.newest else None)

    if not plan.take:
        result.update(backup=plan.newest.summary(), skipped_reason=plan.reason,
                      restore_command=restore_command(plan.newest, backup_dir))
        if module._diff:
            result['diff'] = dict(before=before, after=before)
        module.exit_json(**result)

    if module.check_mode:  # predict what the run would fail on: connection, login, privileges, client tools
        with engine_errors(module, **result):
            result['preflight'] = preflight_backup(cfg, kind)
        result['changed'] = True
        if module._diff:
            result['diff'] = dict(before=before, after=dict(newest_backup='(a new %s backup of %s)'
                                                            % (kind, plan.database)))
        module.exit_json(**result)

    outcome = BackupOutcome()

    def taken():  # a failed copy fails the task; the local backup stays complete and is returned
        if outcome.backup is None:
            return {}
        return dict(changed=True, backup=outcome.backup.summary(),
                    restore_command=restore_command(outcome.backup, backup_dir))

    # The same run hook as a timer's run: run record, metrics, notifications, dead-man's-switch pings.
    run_operation(module, cfg, 'create', kind, lambda: run_backup(cfg, kind, outcome), partial_result=taken,
                  **result)
    result.update(taken(), copies=outcome.copies)
    for warning in outcome.backup.manifest.warnings:
        module.warn('%s: %s' % (outcome.backup.id, warning))
    if module._diff:
        result['diff'] = dict(before=before, after=dict(newest_backup=outcome.backup.id))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
