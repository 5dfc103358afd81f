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
      - Must stay V(full) with O(drill=true).
    type: str
    choices: [full, schema, data, globals]
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

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    engine_errors,
    pgbackup_common_argument_spec,
    pgbackup_config,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.duration import (
    INVALID_DURATION,
    format_duration,
    parse_duration,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.pg.binaries import any_psql
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.repo.catalog import Repository
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.clock import parse_iso, utc_now
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.connection import DbTarget
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.model.drillreport import LATEST_REPORT
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.drill import run_drill
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import (BackupError,
    ConnectionFailed,
    NotFound,
    VerifyError)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.pg.client import query
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.verify import LEVELS, verify_and_record

RESTORABLE_KINDS = ('full', 'schema')


def age_of(moment_text):
    """Seconds since an engine ISO time; None when it is missing or unreadable."""
    try:
        return max(0, int((utc_now() - parse_iso(moment_text)).total_seconds()))
    except (TypeError, ValueError):
        return None


def passed_within(verification, level, max_age):
    """Age of ``verification`` when it passed at ``level`` or higher less than ``max_age`` ago, else None."""
    if not verification or verification.get('ok') is not True or verification.get('level') not in LEVELS:
        return None
    if LEVELS.index(verification['level']) < LEVELS.index(level):
        return None
    age = age_of(verification.get('at'))
    if age is None or age >= max_age:
        return None
    return age


def read_report(path):
    try:
        with open(path, encoding='utf-8') as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def reach_server(cfg, server):
    """Connect to the server of the restore level before verifying.

    An unreachable server or a wrong password says nothing about the backup, but a restore-level
    verification that cannot restore is recorded as failed (and the backup then counts as bad):
    fail before anything is recorded instead.
    """
    psql = any_psql(cfg.pg_bin_dir)
    target = server if server is not None else DbTarget(cfg.require_database_url())
    for name in ('postgres', 'template1'):
        try:
            query(psql, target.for_database(name), 'SELECT 1', timeout=60)
            return
        except BackupError as exc:
            if 'does not exist' not in str(exc) or name == 'template1':
                raise ConnectionFailed('%s (nothing was verified or recorded)' % exc) from None


def none_yet(module, result, exc):
    """Check mode without a backup yet: an earlier task of the play (pg_backup) may take one."""
    module.warn('%s: the run fails unless an earlier task takes one' % exc)
    result['changed'] = True
    module.exit_json(**result)


def source_database(cfg):
    return DbTarget(cfg.database_url).dbname if cfg.database_url else None


def diff_of(before, after):
    return dict(before=dict(verification=before), after=dict(verification=after))


def run_verify(module, cfg, max_age, result):
    params = module.params
    level = params['level']
    repo = Repository(cfg.backup_dir)
    latest = params['backup'] == 'latest'
    with engine_errors(module, **result):
        try:
            backup = repo.find(params['backup'], kind=params['type'] if latest else None,
                               database=source_database(cfg) if latest else None, allow_bad=True)
        except NotFound as exc:
            if module.check_mode and latest:
                none_yet(module, result, exc)
            raise
    result['backup'] = backup.summary()
    before = backup.summary()['verification']
    if level == 'restore' and backup.kind not in RESTORABLE_KINDS:
        # Refused here: the engine would record the refusal as a failed verification (a bad backup).
        module.fail_json(msg='the restore level needs a full or schema backup; %s is a %s backup: use level=archive'
                             % (backup.id, backup.kind), step='config', **result)

    age = passed_within(before, level, max_age) if max_age > 0 else None
    if age is not None:
        result['verification'] = before
        result['skipped_reason'] = ('%s passed %s %s verification %s ago, younger than max_age %s'
                                    % (backup.id, 'an' if before['level'] == 'archive' else 'a', before['level'],
                                       format_duration(age), format_duration(max_age)))
        if module._diff:
            result['diff'] = diff_of(before, before)
        module.exit_json(**result)

    if module.check_mode:
        result['changed'] = True
        if module._diff:
            result['diff'] = diff_of(before, '(a new %s verification of %s)' % (level, backup.id))
        module.exit_json(**result)

    with engine_errors(module, **result):
        server = None
        if params['target_url']:
            server = DbTarget(params['target_url'])
            if cfg.database_url:
                server.borrow_password(DbTarget(cfg.database_url))
        with_globals = params['with_globals']
        if with_globals is None:
            # Another cluster lacks the roles the objects belong to; the source's own cluster has them.
            with_globals = bool(server is not None and cfg.database_url
                                and server.hostinfo != DbTarget(cfg.database_url).hostinfo)
        probes = params['probes'] if params['probes'] is not None else cfg.verify_probes
        if level == 'restore':
            reach_server(cfg, server)
        record = verify_and_record(cfg, backup.id, level=level, server=server, probes=probes,
                                   with_globals=with_globals)[0]
        if server is not None:
            server.close()
    result['changed'] = True
    verification = dict((key, value) for key, value in record.items() if key not in ('id', 'type'))
    result['verification'] = verification
    with engine_errors(module, **result):
        result['backup'] = repo.find(backup.id, allow_bad=True).summary()
    if module._diff:
        result['diff'] = diff_of(before, verification)
    if not verification['ok']:
        module.fail_json(msg='backup %s failed %s verification: %s' % (backup.id, level, verification['details']),
                         step='verify', **result)
    module.exit_json(**result)


def run_dr_drill(module, cfg, max_age, result):
    params = module.params
    if params['backup'] != 'latest' or params['type'] != 'full':
        module.fail_json(msg='drill=true always restores the newest good full backup: leave backup (latest) and '
                             'type (full) unset', step='config', **result)
    repo = Repository(cfg.backup_dir)
    report_path = os.path.join(repo.log_dir, LATEST_REPORT)
    result['report_path'] = report_path
    with engine_errors(module, **result):
        database = DbTarget(cfg.require_database_url()).dbname
        try:
            newest = repo.find('latest', kind='full', database=database)
        except NotFound as exc:
            if module.check_mode:
                none_yet(module, result, exc)
            raise
    result['backup'] = newest.summary()
    before = newest.summary()['verification']

    if max_age > 0:
        previous = read_report(report_path)
        age = age_of(previous.get('finished_at')) if previous else None
        if previous and previous.get('ok') is True and previous.get('database') in (database, None) \
                and age is not None and age < max_age:
            result['report'] = previous
            drilled = [b for b in repo.backups(include_bad=True) if b.id == previous.get('backup_id')]
            if drilled:
                result['backup'] = drilled[0].summary()
                result['verification'] = drilled[0].summary()['verification']
            result['skipped_reason'] = ('the DR drill of %s succeeded %s ago (RTO %s s), younger than max_age %s'
                                        % (previous.get('backup_id'), format_duration(age),
                                           previous.get('rto_seconds'), format_duration(max_age)))
            module.exit_json(**result)

    if module.check_mode:
        result['changed'] = True
        if module._diff:
            result['diff'] = diff_of(before, '(a DR drill of %s)' % newest.id)
        module.exit_json(**result)

    started = utc_now()
    probes = params['probes'] if params['probes'] is not None else cfg.verify_probes
    with engine_errors(module, **result):
        server = None
        if params['target_url']:
            server = DbTarget(params['target_url'])
            server.borrow_password(DbTarget(cfg.require_database_url()))
        reach_server(cfg, server)
        if server is not None:
            server.close()
        try:
            report = run_drill(cfg, params['target_url'], probes=probes, with_globals=params['with_globals'])
        except VerifyError as exc:
            # The engine wrote the report (and recorded the failed verification) before raising.
            report = read_report(report_path)
            fresh = report is not None and age_of(report.get('started_at')) is not None \
                and parse_iso(report['started_at']) >= started
            if fresh:
                result.update(changed=True, report=report)
                drilled = [b for b in repo.backups(include_bad=True) if b.id == report.get('backup_id')]
                if drilled:
                    result['backup'] = drilled[0].summary()
                    result['verification'] = drilled[0].summary()['verification']
            module.fail_json(msg=str(exc), step=exc.step, **result)
    result['changed'] = True
    result['report'] = report
    with engine_errors(module, **result):
        drilled = repo.find(report['backup_id'], allow_bad=True)
    result['backup'] = drilled.summary()
    result['verification'] = drilled.summary()['verification']
    if module._diff:
        result['diff'] = diff_of(before if drilled.id == newest.id else None, result['verification'])
    module.exit_json(**result)


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        backup=dict(type='str', default='latest'),
        type=dict(type='str', default='full', choices=['full', 'schema', 'data', 'globals']),
        level=dict(type='str', default='archive', choices=list(LEVELS)),
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
    if module.params['drill']:
        run_dr_drill(module, cfg, max_age, result)
    else:
        run_verify(module, cfg, max_age, result)


if __name__ == '__main__':
    main()
