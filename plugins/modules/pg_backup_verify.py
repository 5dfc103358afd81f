#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup_verify
short_description: Prove a seawall backup restores - checksums, archive read-back, test restore, or a DR drill
version_added: 0.1.0
description:
  - Verifies one backup of a seawall backup repository at one of three levels and records the
    result (level, time, outcome, duration, details) in the backup's manifest.
  - V(checksum) re-hashes every data file against the manifest and names a truncated or changed file.
    V(archive) also decompresses every file in full and lets C(pg_restore --list) read the archive.
    V(restore) also restores the backup into a scratch database on a server, checks that every
    table holds the row count recorded at backup time and that every O(probes) query returns true,
    then drops the scratch database.
  - With O(drill=true) it runs the disaster-recovery drill instead - the newest good full backup of
    the database of O(database_url) is restored and checked at the V(restore) level, the restore is
    timed (the recovery time objective, RTO) and a JSON report is written to
    C(logs/drill-<time>.json) and C(logs/drill-latest.json) in the backup repository.
  - Fails loudly on a bad backup or a failed drill - the task fails with the details, and the failed
    result is still recorded (a backup that failed verification is no longer offered for restore).
  - Idempotent through O(max_age) - when the backup's recorded verification passed at the requested
    level or a higher one (V(checksum) < V(archive) < V(restore)) less than O(max_age) ago, nothing
    is run and the result is C(changed=false). C(changed=true) means a new result was recorded.
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
      - Reports whether a verification (or drill) would run (C(changed)); runs and records nothing.
      - When O(backup=latest) finds no good backup yet, reports C(changed) with a warning instead of
        failing, since an earlier task of the play may take one.
  diff_mode:
    support: full
    description: Shows the backup's recorded verification before and after the run.
options:
  database_url:
    description:
      - The database whose backups are verified, as a libpq URL C(postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME) -
        V(latest) is the newest good backup of this database (of any database when not set), and the
        V(restore) level and the drill restore on its server when O(target_url) is not set.
      - Needed for O(drill=true), and for the V(restore) level without O(target_url); the lower levels only
        read the repository.
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
      - The backup to verify - its id (see M(seawall.pgbackup.pg_backup_info)), the path of its
        manifest or of one of its data files, or V(latest).
      - V(latest) is the newest good backup of O(type) of the database of O(database_url) (of any
        database when O(database_url) is not set).
      - A backup marked bad by an earlier verification can be verified again by its id.
      - Must stay V(latest) with O(drill=true).
    type: str
    default: latest
  type:
    description:
      - The kind of backup V(latest) picks.
      - The V(restore) level needs a V(full) or V(schema) backup.
      - For a V(base) (physical) backup, V(archive) extracts it into scratch and runs C(pg_verifybackup);
        its V(restore) level is not available yet (the task fails, nothing is recorded).
      - An V(incremental) is verified like a V(base) backup when it is native (C(pg_basebackup --incremental));
        one that is the WAL archived since its parent is verified against the WAL archive (its range contiguous;
        from V(archive) on, every archived file of the range read back and checked).
      - Must stay V(full) with O(drill=true).
    type: str
    choices: [full, schema, data, globals, base, incremental]
    default: full
  level:
    description:
      - How far to check; each level includes the ones before it.
      - V(checksum) - the sha256 of every data file matches the manifest.
      - V(archive) - every file decompresses in full and C(pg_restore --list) reads the archive.
      - V(restore) - a test restore into a scratch database C(seawall_verify_<backup>) on the server
        of O(target_url), with the recorded row counts and O(probes) checked; the scratch database is
        dropped afterwards. This needs the right to create databases on that server.
      - Ignored with O(drill=true), which always checks at the V(restore) level.
    type: str
    choices: [checksum, archive, restore]
    default: archive
  target_url:
    description:
      - The server the V(restore) level and the drill restore on, as a libpq URL; its database part is ignored.
      - If not set, the server of O(database_url) is used.
      - Without a password, the password of O(database_url) is used when the user and server are the
        same; otherwise give it with E(PGPASSFILE) or C(~/.pgpass).
      - Treated as a secret (C(no_log)).
    type: str
  probes:
    description:
      - SQL queries run on the restored scratch database (V(restore) level and drill); each must
        return a single true value, for example V(SELECT count(*) > 0 FROM public.players).
      - If not set, the configuration file's C(backup.verify.probes) are used.
    type: list
    elements: str
  with_globals:
    description:
      - Create the backup's roles and tablespaces on the server before the test restore.
      - If not set, this happens only when O(target_url) names another server than O(database_url)
        (another cluster lacks the roles that own the objects; the source cluster has them).
    type: bool
  max_age:
    description:
      - Run nothing when the backup's recorded verification passed at O(level) or a higher level
        less than this long ago.
      - With O(drill=true), run no drill when C(logs/drill-latest.json) reports a successful drill
        of this database that finished less than this long ago (whichever full backup it restored;
        a V(restore)-level verification does not count, it writes no drill report).
      - A duration such as V(30m), V(20h), V(2d), V(1w) or V(1d12h), or a number of seconds.
      - V(0) (the default) verifies on every run.
    type: raw
    default: 0
  drill:
    description:
      - Run the disaster-recovery drill instead of verifying O(backup) - restore the newest good
        full backup of the database of O(database_url) on the server of O(target_url), check it,
        measure the restore time (RTO) and write the report under C(logs/) in the backup repository.
    type: bool
    default: false
requirements:
  - PostgreSQL client tools (C(pg_restore), C(psql)) of at least the backup's C(pg_dump) version on the managed host
    for the V(archive) and V(restore) levels.
seealso:
  - module: seawall.pgbackup.pg_backup
  - module: seawall.pgbackup.pg_backup_restore
  - module: seawall.pgbackup.pg_backup_info
notes:
  - Returned paths are on the managed host.
  - The result is recorded under the repository lock; a long V(restore)-level check does not hold
    the lock, so scheduled backups are not delayed by it.
  - The same checks run as C(seawall-pgbackup verify) and C(seawall-pgbackup drill) on the host.
'''

EXAMPLES = r'''
- name: Read back the newest full backup unless that was done in the last day
  seawall.pgbackup.pg_backup_verify:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    level: archive
    max_age: 1d

- name: Test-restore one backup on a scratch server and check the data
  seawall.pgbackup.pg_backup_verify:
    backup_dir: /var/backups/postgresql
    backup: full-vtt-20260126T020000Z
    level: restore
    target_url: postgresql://verify@scratch-db.internal:5432/postgres
    probes:
      - SELECT count(*) > 0 FROM public.players
      - SELECT max(created_at) > now() - interval '2 days' FROM public.chat_messages
  environment:
    DATABASE_URL: "{{ vault_database_url }}"
    PGPASSFILE: /var/lib/seawall/.pgpass

- name: Weekly DR drill, reporting the measured RTO
  seawall.pgbackup.pg_backup_verify:
    database_url: "{{ vault_database_url }}"
    backup_dir: /var/backups/postgresql
    drill: true
    max_age: 6d
  register: drill

- name: Show the RTO
  ansible.builtin.debug:
    msg: "{{ drill.report.backup_id }} restored in {{ drill.report.rto_seconds }} s"
'''

RETURN = r'''
verification:
  description:
    - The verification of RV(backup) - the one recorded by this run, or when nothing was run the
      recorded one that made the run skip it.
    - V(null) in check mode when a verification would run, and when the backup was never verified.
  returned: success
  type: dict
  contains:
    level:
      description: The level checked.
      type: str
      sample: archive
    at:
      description: When the verification started (UTC, ISO 8601).
      type: str
      sample: "2026-01-26T03:00:00.123456Z"
    ok:
      description: Whether the backup passed.
      type: bool
      sample: true
    details:
      description: What was checked, or what failed.
      type: str
      sample: checksums match; 186 archive entries; globals script complete
    duration_seconds:
      description: How long the verification took.
      type: float
      sample: 0.412
    rto_seconds:
      description: How long the test restore took (V(restore) level only).
      type: float
      sample: 3.871
report:
  description:
    - The drill report (O(drill=true)), as written to C(logs/drill-latest.json) - by this run, or when
      no drill was needed the recent one that made the run skip it.
    - V(null) without O(drill), and in check mode when a drill would run.
  returned: success
  type: dict
  contains:
    kind:
      description: Always V(dr-drill).
      type: str
      sample: dr-drill
    backup_id:
      description: The full backup restored.
      type: str
      sample: full-vtt-20260126T020000Z
    database:
      description: The database the backup is of.
      type: str
      sample: vtt
    backup_created_at:
      description: When the backup was taken (UTC, ISO 8601).
      type: str
      sample: "2026-01-26T02:00:00.123456Z"
    server:
      description: The server the drill restored on (host and port).
      type: str
      sample: 127.0.0.1:5432
    started_at:
      description: When the drill started (UTC, ISO 8601).
      type: str
      sample: "2026-01-26T04:00:00.123456Z"
    finished_at:
      description: When the drill finished (UTC, ISO 8601).
      type: str
      sample: "2026-01-26T04:00:05.654321Z"
    ok:
      description: Whether the drill succeeded.
      type: bool
      sample: true
    rto_seconds:
      description: The measured time to restore, in seconds.
      type: float
      sample: 3.871
    duration_seconds:
      description: The whole drill's duration, checks included, in seconds.
      type: float
      sample: 5.123
    details:
      description: What was checked, or what failed.
      type: str
      sample: checksums match; ...; restored 42 objects into seawall_verify_full_vtt_20260126T020000Z on 127.0.0.1:5432 in 3.9 s
backup:
  description: The backup verified (or drilled), as M(seawall.pgbackup.pg_backup_info) lists it.
  returned: when a backup was found
  type: dict
  sample:
    id: full-vtt-20260126T020000Z
    type: full
    database: vtt
    good: true
report_path:
  description: Path of C(logs/drill-latest.json) on the managed host (O(drill=true)).
  returned: when O(drill=true)
  type: str
  sample: /var/backups/postgresql/logs/drill-latest.json
skipped_reason:
  description: Why nothing was run; V(null) when something was run (or would be, in check mode).
  returned: success
  type: str
  sample: full-vtt-20260126T020000Z passed an archive verification 2h5m ago, younger than max_age 1d
backup_dir:
  description: The absolute path of the backup repository on the managed host.
  returned: always
  type: str
  sample: /var/backups/postgresql
step:
  description: The step that failed (for example V(verify), V(select), V(config), V(connect), V(client-tools)).
  returned: failure
  type: str
  sample: verify
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    pgbackup_common_argument_spec,
    pgbackup_config,
    planned,
    run_operation,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.duration import INVALID_DURATION, parse_duration
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import VerifyError
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.drill import (
    DrillFailed,
    plan_drill,
    run_drill,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.verify import (
    DEFAULT_KIND,
    DEFAULT_LEVEL,
    LEVELS,
    plan_verify,
    run_verify,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.repo.catalog import open_repository


def finish(module, result, plan, before, after):
    """Exit for a plan that skips (changed=false) or, in check mode, one that would run."""
    result['changed'] = plan.runs
    if not plan.runs:
        result['skipped_reason'] = plan.skip_reason
    if module._diff:
        result['diff'] = dict(before=dict(verification=before), after=dict(verification=after))
    module.exit_json(**result)


def drilled(cfg, report, result):
    """The backup a drill report names, and its recorded verification, into the result."""
    for backup in open_repository(cfg).backups(include_bad=True):
        if backup.id == (report or {}).get('backup_id'):
            result.update(backup=backup.summary(), verification=backup.summary()['verification'])
    return result


def verify(module, cfg, max_age, result):
    params = module.params
    plan = planned(module, result, lambda: plan_verify(cfg, params['backup'], params['level'], params['type'],
                                                       max_age))
    result['backup'] = plan.backup.summary()
    if not plan.runs:
        result['verification'] = plan.recorded
        finish(module, result, plan, plan.recorded, plan.recorded)
    if module.check_mode:
        finish(module, result, plan, plan.recorded, '(%s)' % plan.reason)

    def action():
        record = run_verify(cfg, plan, params['target_url'], params['probes'], params['with_globals'])
        verification = dict((key, value) for key, value in record.items() if key not in ('id', 'type'))
        shaped = dict(changed=True, verification=verification,
                      backup=open_repository(cfg).find(plan.backup.id, allow_bad=True).summary())
        if not record['ok']:
            failed = VerifyError('backup %s failed %s verification: %s'
                                 % (plan.backup.id, plan.level, verification['details']))
            failed.result = shaped  # what the run recorded, in the failed task's result
            raise failed
        return shaped

    result.update(run_operation(module, cfg, 'verify', None, action, **result))
    if module._diff:
        result['diff'] = dict(before=dict(verification=plan.recorded), after=dict(verification=result['verification']))
    module.exit_json(**result)


def drill(module, cfg, max_age, result):
    params = module.params
    if params['backup'] != 'latest' or params['type'] != DEFAULT_KIND:
        module.fail_json(msg='drill=true always restores the newest good full backup: leave backup (latest) and '
                             'type (full) unset', step='config', **result)
    plan = planned(module, result, lambda: plan_drill(cfg, max_age))
    result.update(report_path=plan.report_path, backup=plan.backup.summary())
    before = plan.backup.summary()['verification']
    if not plan.runs:
        result['report'] = plan.previous
        drilled(cfg, plan.previous, result)
        finish(module, result, plan, result['verification'], result['verification'])
    if module.check_mode:
        finish(module, result, plan, before, '(%s)' % plan.reason)

    def action():
        try:
            report = run_drill(cfg, params['target_url'], params['probes'], params['with_globals'], plan=plan)
        except DrillFailed as exc:  # the report was written (and the failed verification recorded) first
            exc.result = drilled(cfg, exc.report, dict(changed=True, report=exc.report))
            raise
        return drilled(cfg, report, dict(changed=True, report=report))

    result.update(run_operation(module, cfg, 'drill', None, action, **result))
    if module._diff:
        after = result['verification']
        result['diff'] = dict(before=dict(verification=before if result['backup']['id'] == plan.backup.id else None),
                              after=dict(verification=after))
    module.exit_json(**result)


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        backup=dict(type='str', default='latest'),
        type=dict(type='str', default=DEFAULT_KIND, choices=['full', 'schema', 'data', 'globals', 'base', 'incremental']),
        level=dict(type='str', default=DEFAULT_LEVEL, choices=list(LEVELS)),
        target_url=dict(type='str', no_log=True),
        probes=dict(type='list', elements='str'),
        with_globals=dict(type='bool'),
        max_age=dict(type='raw', default=0),
        drill=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    max_age = parse_duration(module.params['max_age'])
    if max_age is None:
        module.fail_json(msg='max_age=%r %s' % (module.params['max_age'], INVALID_DURATION), step='config')

    cfg = pgbackup_config(module)
    result = dict(changed=False, verification=None, report=None, backup=None, skipped_reason=None,
                  backup_dir=os.path.abspath(cfg.backup_dir))
    (drill if module.params['drill'] else verify)(module, cfg, max_age, result)


if __name__ == '__main__':
    main()
