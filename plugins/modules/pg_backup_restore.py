#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup_restore
short_description: Restore a seawall backup into a PostgreSQL database, refusing to overwrite data unless told to
version_added: 0.1.0
description:
  - Restores one backup of a seawall backup repository - chosen by id, as the newest good one
    (V(latest)), or as the newest good one taken before a time (O(before)) - with PostgreSQL's own
    tools (C(pg_restore), C(psql)).
  - Full and schema backups are restored into a staging database that replaces the target only when
    the restore succeeded, so a failed restore leaves the target as it was. A restore that restored
    nothing is a failure. Data-only backups are replayed into the existing tables in one transaction.
  - Before anything is touched, the backup's checksums are checked, and the target server must be of
    the backup's PostgreSQL major version or newer, with client tools new enough and, when the server
    is local, enough free space.
  - Refuses a target database that already holds objects unless O(replace=true).
  - Records the restored backup id on the target database (the database setting
    C(seawall.restored_backup)) and is idempotent on that record - when the target already holds the
    selected backup, nothing is restored and the result is C(changed=false) (O(force=true) restores it again).
  - A partial restore (O(tables), O(schemas)) restores every definition and the rows of the chosen
    tables only; without O(target_url) it goes into a new temporary database
    C(<database>_partial_<time>) beside the database of O(database_url), never into that database.
  - With O(pgdata), a base (physical) backup rebuilds a data directory instead (see O(pgdata)).
author:
  - Seawall Platform Team (@seawall)
extends_documentation_fragment:
  - seawall.pgbackup.common
  - seawall.pgbackup.common.client_tools
  - seawall.pgbackup.common.trust
  - seawall.pgbackup.common.unused_write_settings
attributes:
  check_mode:
    support: full
    description:
      - Reports which backup would be restored where (C(changed)) and restores nothing.
      - Fails, as the restore would, when the target holds objects and O(replace) is not set.
      - When O(backup=latest) finds no good backup yet, reports C(changed) with a warning instead of
        failing, since an earlier task of the play may take one.
  diff_mode:
    support: full
    description: Shows the backup id recorded on the target database before and after the run.
options:
  database_url:
    description:
      - The source database, as a libpq URL C(postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME) - the database
        whose backups V(latest) and O(before) choose from (of any database when not set; a backup id selects
        regardless), and the database restored into when O(target_url) is not set (a partial restore then
        creates a new database beside it).
      - Needed unless O(target_url) is set or O(pgdata) is used.
      - O(target_url) without a password borrows this URL's password when its user and server are the same.
      - If not set, the E(DATABASE_URL) environment variable of the module (set it with the
        C(environment) keyword), then the configuration file's C(backup.databaseUrl) are used.
      - The password never reaches a command line; the client tools get it from a private,
        temporary libpq passfile (mode 0600). You can leave it out of the URL and use your own
        E(PGPASSFILE) or C(~/.pgpass) instead.
      - The value is treated as a secret (C(no_log)); results show the URL without its password.
    type: str
  backup:
    description:
      - The backup to restore - its id (see M(seawall.pgbackup.pg_backup_info)), the path of its
        manifest or of one of its data files, or V(latest).
      - V(latest) is the newest good backup of O(type) of the database of O(database_url).
      - A backup marked bad by a failed verification is never restored.
    type: str
    default: latest
  type:
    description:
      - The kind of backup V(latest) and O(before) pick.
      - V(full) restores the database (and with O(with_globals) the roles first), V(schema) the
        structure only, V(data) the rows into an existing schema, V(globals) only the roles and tablespaces.
      - V(base) is a physical backup, restored into a data directory (O(pgdata)).
      - If not set, V(full) (V(base) with O(pgdata)).
    type: str
    choices: [full, schema, data, globals, base]
  before:
    description:
      - Restore the newest good backup of O(type) that started before this time instead of the newest one.
      - ISO 8601, for example V(2026-11-24T13:00:00Z) or V(2026-11-24 13:00); a time without an offset
        is in the configuration's time zone (UTC by default).
      - Only with O(backup=latest).
    type: str
  target_url:
    description:
      - The database to restore into, as a libpq URL C(postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME).
        It is created when it does not exist.
      - If not set, the database of O(database_url) itself - which holds objects, so this needs
        O(replace=true) - or, for a partial restore, a new temporary database beside it.
      - Without a password, the password of O(database_url) is used when the user and server are the
        same; otherwise give it with E(PGPASSFILE) or C(~/.pgpass).
      - Treated as a secret (C(no_log)); results show the URL without its password.
    type: str
  pgdata:
    description:
      - Rebuild a PostgreSQL data directory at this path from a base backup (O(type=base)) instead of restoring
        into a database. The path must be absent (its parent existing) or an empty directory; it is never
        overwritten, and a failure half-way leaves it as it was (absent or empty).
      - Its files belong to the user the module runs as (mode 0700); start the server as that user, on a port of
        your choice. The backup holds the WAL it needs, so no recovery settings are written and the server
        reaches consistency by itself.
      - Idempotent - when the directory already holds the selected backup (its C(backup_label), or
        C(backup_label.old) once started, names the backup id), nothing is done (C(changed=false)).
      - With a recovery target (O(recovery_target), O(recovery_target_time), O(recovery_target_lsn),
        O(recovery_target_xid), O(recovery_target_name)), recovery settings are written instead - see
        O(recovery_target).
      - Not with O(target_url), O(replace), O(tables), O(schemas), O(with_globals), O(jobs) or O(keep_going).
    type: path
  recovery_target:
    description:
      - Point-in-time recovery with O(pgdata) - V(immediate) recovers to the end of the base backup and promotes,
        V(latest) replays the whole WAL archive.
      - With any recovery target the data directory gets recovery settings (C(restore_command) running
        C(seawall-pgbackup wal-fetch) on this backup directory, C(recovery_target_*),
        C(recovery_target_action=promote)) in C(postgresql.auto.conf) and a C(recovery.signal) file; the server
        recovers when it is started.
      - With V(latest) for O(backup), the base backup (or incremental chain) is the newest good one that ends
        before the target.
      - A target the archive cannot reach (WAL missing, no commit after the time, no such restore point or
        transaction after the backup) fails the task before the directory is touched, in check mode too.
      - Only one of O(recovery_target), O(recovery_target_time), O(recovery_target_lsn), O(recovery_target_xid)
        and O(recovery_target_name).
    type: str
    choices: [immediate, latest]
  recovery_target_time:
    description:
      - Point-in-time recovery with O(pgdata) to this time - ISO 8601; without an offset, in the configuration's
        time zone. Recovery stops before the first transaction that ended after it.
      - The archive must hold a transaction that ended after this time (PostgreSQL refuses to end recovery
        before its target).
    type: str
  recovery_target_lsn:
    description: Point-in-time recovery with O(pgdata) to this WAL location (like V(0/3000028)).
    type: str
  recovery_target_xid:
    description: Point-in-time recovery with O(pgdata) to the end of this transaction id.
    type: str
  recovery_target_name:
    description: Point-in-time recovery with O(pgdata) to this named restore point (C(pg_create_restore_point)).
    type: str
  replace:
    description:
      - Replace a target database that already holds objects (the restore's C(--clean)).
      - For full and schema backups the old database is dropped only after the new one was restored
        completely; for data-only backups each table is emptied right before it is refilled, in the
        same transaction.
      - For full and schema backups the new database replaces the old one in one transaction (the old one
        is renamed aside, then dropped), so the target name is present whenever the run is interrupted.
      - Not with O(tables) or O(schemas) - a partial restore never replaces its target (the task fails).
    type: bool
    default: false
  keep_going:
    description:
      - When pg_restore cannot restore some objects (typically on a newer server that lacks an extension
        the backup uses), restore everything else and put it in place instead of leaving the target as it
        was; the task then fails (kind C(restore-partial)) naming how many objects failed and which.
      - Without it, such a restore fails, names the objects that failed, and leaves the target as it was.
    type: bool
    default: false
  force:
    description:
      - Restore even when the target database already records the selected backup as restored.
      - A target that holds objects still needs O(replace=true).
    type: bool
    default: false
  with_globals:
    description:
      - Create the backup's roles, role memberships and settings and tablespaces first, for a fresh cluster.
      - Roles that exist and the connecting role are never altered.
      - Needs a V(full) or V(globals) backup.
      - If not set, this happens for a V(full) backup only when O(target_url) names another server than
        O(database_url) (another cluster lacks the roles that own the objects; the source cluster has them),
        as for M(seawall.pgbackup.pg_backup_verify), the drill and C(seawall-pgbackup restore).
    type: bool
  jobs:
    description:
      - Parallel C(pg_restore) jobs.
      - If not set, E(BACKUP_JOBS), then the configuration file's C(backup.jobs), then V(1).
    type: int
  tables:
    description:
      - Partial restore - the rows of only these tables, as V(schema.table) (V(public) when no schema
        is given; quote names with dots, V("a.b".c)). Every definition of the backup is restored.
      - Needs a V(full) backup.
    type: list
    elements: str
    default: []
  schemas:
    description:
      - Partial restore - the rows of every table of these schemas.
      - Needs a V(full) backup.
    type: list
    elements: str
    default: []
requirements:
  - PostgreSQL client tools (C(pg_restore), C(psql)) of at least the target server's and the backup's C(pg_dump)
    major version on the managed host.
seealso:
  - module: seawall.pgbackup.pg_backup
  - module: seawall.pgbackup.pg_backup_verify
  - module: seawall.pgbackup.pg_backup_info
notes:
  - Only full and schema restores are recorded on the target; data-only and globals restores run on every call.
  - The record names the backup, not the tables of a partial restore - to restore other tables of the
    same backup into the same target, set O(force=true) and O(replace=true).
  - A partial restore without O(target_url) creates a new database on every run.
  - The same restore runs as C(seawall-pgbackup restore) on the host.
'''

EXAMPLES = r'''
- name: Restore the newest full backup into a new database on the same server
  seawall.pgbackup.pg_backup_restore:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    target_url: postgresql://backup@db.example.internal:5432/vtt_copy

- name: Roll the database back to the last backup taken before the incident, replacing it
  seawall.pgbackup.pg_backup_restore:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    before: "2026-11-24T13:00:00Z"
    replace: true

- name: Rebuild on a fresh cluster, roles first
  seawall.pgbackup.pg_backup_restore:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    backup: full-vtt-20260126T020000Z
    target_url: postgresql://postgres@new-db.internal:5432/vtt
    with_globals: true
    jobs: 4
  environment:
    PGPASSFILE: /var/lib/seawall/.pgpass

- name: Rebuild a data directory from the newest base backup (start it with pg_ctl -D afterwards)
  seawall.pgbackup.pg_backup_restore:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    type: base
    pgdata: /srv/pg-restored/data

- name: Rebuild a data directory as it was at 13:00, replaying the WAL archive (the server recovers when started)
  seawall.pgbackup.pg_backup_restore:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    type: base
    pgdata: /srv/pg-restored/data
    recovery_target_time: "2026-11-24T13:00:00Z"

- name: Get back one table's rows in a temporary database beside the source
  seawall.pgbackup.pg_backup_restore:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    tables:
      - public.players
  register: partial

- name: Where it went
  ansible.builtin.debug:
    msg: "{{ partial.restore.database }} holds {{ partial.restore.rows }}"
'''

RETURN = r'''
restore:
  description: What this run restored; V(null) when nothing was restored (or in check mode).
  returned: success
  type: dict
  contains:
    backup_id:
      description: The backup restored.
      type: str
      sample: full-vtt-20260126T020000Z
    kind:
      description: The kind of backup restored.
      type: str
      sample: full
    target:
      description:
        - The target database URL, without its password.
        - Ansible hides it (C(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER)) when it equals O(target_url) or
          O(database_url), options marked C(no_log); RV(target) has the same information.
      type: str
      sample: postgresql://backup@db.example.internal:5432/vtt_copy
    database:
      description: The target database.
      type: str
      sample: vtt_copy
    replaced:
      description: Whether an existing target database was replaced.
      type: bool
      sample: false
    globals_applied:
      description: Whether the backup's roles and tablespaces were applied first.
      type: bool
      sample: false
    objects:
      description: User objects in the restored database (for data-only backups, the tables filled).
      type: int
      sample: 42
    seconds:
      description: How long the restore took.
      type: float
      sample: 3.871
    jobs:
      description: Parallel pg_restore jobs used.
      type: int
      sample: 1
    rows:
      description: Rows per table filled by a partial restore (V(null) otherwise).
      type: dict
      sample: {"public.players": 12}
    warnings:
      description: Messages of the restore tools and properties of the source database that could not be applied.
      type: list
      elements: str
      sample: []
    pgdata:
      description: With O(pgdata), the data directory rebuilt (absolute path).
      type: str
      sample: /srv/pg-restored/data
    files:
      description: With O(pgdata), the files written into the data directory.
      type: int
      sample: 1012
    bytes:
      description: With O(pgdata), the bytes written into the data directory.
      type: int
      sample: 40475648
    start_lsn:
      description: With O(pgdata), the base backup's first WAL location.
      type: str
      sample: 0/2000028
    stop_lsn:
      description: With O(pgdata), the WAL location the restored server is consistent at.
      type: str
      sample: 0/2000100
    timeline:
      description: With O(pgdata), the base backup's timeline.
      type: int
      sample: 1
    chain:
      description: With O(pgdata), the backups combined, base first (an incremental chain, or a recovery target).
      type: list
      elements: str
      sample: [base-vtt-20260126T020000Z]
    recovery_target:
      description: With a recovery target, its kind (V(time), V(lsn), V(xid), V(name), V(immediate), V(latest)).
      type: str
      sample: time
    recovery_target_text:
      description: With a recovery target, the target in words.
      type: str
      sample: time 2026-11-24T13:00:00.000000Z
    archive_reaches_lsn:
      description: With a recovery target, where the unbroken WAL archive from the backup's start ends.
      type: str
      sample: 0/9000000
    wal_link:
      description:
        - When O(backup) names a WAL-method incremental (PostgreSQL 15/16), its id - its parents' data was restored
          with recovery settings that replay its WAL to its last record.
      type: str
      sample: incremental-vtt-20260126T140000Z
    stop_record:
      description:
        - With a time, xid or name target, the WAL record recovery stops at, as found in the archive.
      type: str
      sample: commit of xid 812 at 0/8001F28 (2026-11-24T13:00:04.100000Z)
    restore_command:
      description: With a recovery target, the C(restore_command) written into C(postgresql.auto.conf).
      type: str
      sample: /usr/local/bin/seawall-pgbackup --backup-dir /srv/backups wal-fetch --spool pg_wal/seawall-prefetch %f %p
backup:
  description: The backup selected, as M(seawall.pgbackup.pg_backup_info) lists it.
  returned: success
  type: dict
  sample:
    id: full-vtt-20260126T020000Z
    type: full
    database: vtt
    good: true
target:
  description:
    - Where the backup is (or would be) restored.
    - With O(pgdata), only RV(target.pgdata) is set.
    - V(null) for a partial restore without O(target_url) in check mode (its database name is chosen when it runs).
  returned: success
  type: dict
  contains:
    server:
      description: Host and port of the target server, as in the URL.
      type: str
      sample: db.example.internal:5432
    database:
      description: The target database.
      type: str
      sample: vtt_copy
    user:
      description: The user connecting to it (V(null) when the URL names none).
      type: str
      sample: backup
    pgdata:
      description: With O(pgdata), the data directory (absolute path).
      type: str
      sample: /srv/pg-restored/data
restored_before:
  description:
    - The backup id recorded on the target database before the run; V(null) when none (or no such database).
    - With O(pgdata), the backup id in the data directory's backup_label.
  returned: success
  type: str
  sample: full-vtt-20260125T020000Z
skipped_reason:
  description: Why nothing was restored; V(null) when a restore ran (or would, in check mode).
  returned: success
  type: str
  sample: vtt_copy already holds full-vtt-20260126T020000Z (restored earlier); force=true restores it again
backup_dir:
  description: The absolute path of the backup repository on the managed host.
  returned: always
  type: str
  sample: /var/backups/postgresql
step:
  description: The step that failed (for example V(select), V(restore), V(globals), V(connect), V(client-tools), V(config)).
  returned: failure
  type: str
  sample: restore
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    engine_errors,
    pgbackup_common_argument_spec,
    pgbackup_config,
    planned,
    run_operation,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.connection import DbTarget
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.pitr import (
    plan_point_in_time_directory,
    restore_point_in_time,
    target_from,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.restore import (
    plan_data_directory,
    plan_restore,
    restore_data_directory,
    run_restore,
)


def describe(target, database=None):
    """The target without its URL: Ansible masks any string equal to a no_log option such as target_url."""
    return dict(server=target.hostinfo, database=database or target.dbname, user=target.user)


def restore_data_directory_task(module, cfg, result):
    """O(pgdata): a base backup into a data directory (idempotent on the backup id in its backup_label)."""
    params = module.params
    for name in ('target_url', 'replace', 'tables', 'schemas', 'with_globals', 'jobs', 'keep_going'):
        if params[name]:
            module.fail_json(msg='%s does not apply with pgdata (a base backup restored into a data directory)'
                             % name, step='config', **result)
    with engine_errors(module, **result):
        target = target_from(params['recovery_target_time'], params['recovery_target_lsn'],
                             params['recovery_target_xid'], params['recovery_target_name'],
                             params['recovery_target'] == 'immediate', params['recovery_target'] == 'latest',
                             cfg.timezone)
    if target is not None and params['before']:
        module.fail_json(msg='before does not apply with a recovery target (it chooses its base backup itself)',
                         step='config', **result)
    if target is not None:
        plan = planned(module, result, lambda: plan_point_in_time_directory(cfg, params['backup'], params['pgdata'],
                                                                            target, params['type']))
    else:
        plan = planned(module, result, lambda: plan_data_directory(cfg, params['backup'], params['pgdata'],
                                                                   params['type'], params['before']))
    backup, before = plan['backup'], plan['restored_before']
    result.update(backup=backup.summary(), restored_before=before, target=dict(pgdata=plan['pgdata']),
                  skipped_reason=plan['skip_reason'])
    if module._diff:
        result['diff'] = dict(before=dict(restored_backup=before),
                              after=dict(restored_backup=before if before == backup.id else backup.id))
    if plan['skip_reason'] or module.check_mode:
        result['changed'] = not plan['skip_reason']
        module.exit_json(**result)
    if target is not None:
        restored = run_operation(module, cfg, 'restore', backup.kind,
                                 lambda: restore_point_in_time(cfg, backup.id, plan['pgdata'], target,
                                                               config_file=params['config_file']), **result)
    else:
        restored = run_operation(module, cfg, 'restore', backup.kind,
                                 lambda: restore_data_directory(cfg, backup.id, plan['pgdata'],
                                                                config_file=params['config_file']), **result)
    result.update(changed=True, restore=restored)
    module.exit_json(**result)


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        backup=dict(type='str', default='latest'),
        type=dict(type='str', choices=['full', 'schema', 'data', 'globals', 'base']),
        before=dict(type='str'),
        target_url=dict(type='str', no_log=True),
        replace=dict(type='bool', default=False),
        force=dict(type='bool', default=False),
        with_globals=dict(type='bool'),
        jobs=dict(type='int'),
        tables=dict(type='list', elements='str', default=[]),
        schemas=dict(type='list', elements='str', default=[]),
        keep_going=dict(type='bool', default=False),
        pgdata=dict(type='path'),
        recovery_target=dict(type='str', choices=['immediate', 'latest']),
        recovery_target_time=dict(type='str'),
        recovery_target_lsn=dict(type='str'),
        recovery_target_xid=dict(type='str'),
        recovery_target_name=dict(type='str'),
    )
    targets = ['recovery_target', 'recovery_target_time', 'recovery_target_lsn', 'recovery_target_xid',
               'recovery_target_name']
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, mutually_exclusive=[targets],
                           required_by=dict((name, 'pgdata') for name in targets))
    params = module.params
    if params['jobs'] is not None and params['jobs'] < 1:
        module.fail_json(msg='jobs=%d is not valid: use 1 or more' % params['jobs'], step='config')

    cfg = pgbackup_config(module)
    result = dict(changed=False, restore=None, backup=None, target=None, restored_before=None, skipped_reason=None,
                  backup_dir=os.path.abspath(cfg.backup_dir))
    if params['pgdata'] is not None:
        restore_data_directory_task(module, cfg, result)
    plan = planned(module, result, lambda: plan_restore(
        cfg, params['backup'], params['type'], params['before'], params['target_url'], params['tables'],
        params['schemas'], clean=params['replace'], force=params['force']))
    result.update(backup=plan.backup.summary(), restored_before=plan.recorded,
                  target=describe(plan.target) if plan.target is not None else None)
    before, after = dict(restored_backup=plan.recorded), dict(restored_backup=plan.backup.id)
    if module._diff:
        result['diff'] = dict(before=before, after=after if plan.runs else before)
    if not plan.runs:
        result['skipped_reason'] = '%s; force=true restores it again' % plan.skip_reason
        module.exit_json(**result)
    if plan.refusal:
        # Refused before anything is touched, in check mode as in a run.
        module.fail_json(msg='%s: restore into another database or set replace=true to replace it' % plan.refusal,
                         step='restore', **result)
    if module.check_mode:
        result['changed'] = True
        module.exit_json(**result)

    restored = run_operation(module, cfg, 'restore', plan.backup.kind,
                             lambda: run_restore(cfg, plan, clean=params['replace'],
                                                 with_globals=params['with_globals'], jobs=params['jobs'],
                                                 tables=params['tables'], schemas=params['schemas'],
                                                 keep_going=params['keep_going']), **result)
    result.update(changed=True, restore=restored.as_dict())
    if plan.target is None:
        result['target'] = describe(DbTarget(cfg.require_database_url()), restored.database)
    for warning in restored.warnings:
        module.warn('%s: %s' % (plan.backup.id, warning))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
