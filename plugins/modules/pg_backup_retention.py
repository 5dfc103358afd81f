#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup_retention
short_description: Delete the backups a retention policy no longer keeps, never the last good one
version_added: 0.1.0
description:
  - Plans retention for every backup in a seawall backup repository - keep or delete, with the
    reasons (C(daily slot 2026-11-24), C(weekly slot 2026-W47), C(newest good full), C(parent of ...),
    C(expired)) - and deletes only what the plan says.
  - Slots work like C(borg prune) and C(restic forget) - for each granularity (C(hourly), C(daily),
    C(weekly), C(monthly), C(yearly)) with a count N, each of the N newest periods that hold a
    good backup keeps one backup, the newest verified one in it if any, else the newest. Periods are
    computed in O(timezone); weeks are ISO weeks. C(keep_last) keeps the N newest good backups;
    C(min_keep) keeps at least N good backups.
  - Rules that hold whatever the policy says - only good backups (complete, not failed verification)
    count toward slots; the newest good backup of each type and database is kept; a backup that a kept
    backup depends on (its parent) is kept; when the newest backup of a type and database is not good,
    or the newest good one is older than the type's schedule allows (the runs stopped), nothing of that
    type and database is deleted and every decision of it says why; a type without a policy keeps
    everything (the default for C(data)). Failed backups older than the newest good one are deleted.
  - Files of interrupted runs (no manifest names them) older than O(leftover_grace) are removed;
    younger ones are reported in RV(leftovers_kept).
  - Runs under the repository lock (one run per repository at a time) and reads the catalog inside it.
    A backup is deleted manifest first, then its files, so an interruption never leaves a listed backup
    with missing files. Each deletion is logged in C(logs/backup.log).
  - Idempotent - a second run deletes nothing. The same engine runs as C(seawall-pgbackup cleanup [--dry-run]).
  - Outside check mode the run is monitored like the scheduled cleanup job's - the run record
    C(logs/last-run-cleanup.json), the metrics textfile and the configured notifications.
author:
  - Seawall Platform Team (@seawall)
extends_documentation_fragment:
  - seawall.pgbackup.common
  - seawall.pgbackup.common.no_connection
  - seawall.pgbackup.common.trust
  - seawall.pgbackup.common.unused_write_settings
attributes:
  check_mode:
    support: full
    description: Computes and returns the plan and deletes nothing; C(changed) says whether something would be deleted.
  diff_mode:
    support: full
    description: Shows the ids of the backups present before and kept after the run.
options:
  policy:
    description:
      - Retention policies by backup type, replacing the configured policy of each type named here
        (a type not named keeps its configured policy).
      - Each policy is a dictionary of counts with the keys V(hourly), V(daily), V(weekly), V(monthly),
        V(yearly), V(keep_last) and V(min_keep). A count of V(0) is the same as leaving the key out.
      - An empty policy (V({})) keeps every backup of that type.
      - If not set, the configuration file's C(backup.types.<type>.retention), the environment variables
        E(BACKUP_RETENTION_DAILY), E(BACKUP_RETENTION_WEEKLY), E(BACKUP_RETENTION_MONTHLY) (for full
        backups) and the defaults apply - full 7 daily, 4 weekly, 12 monthly; incremental 24 hourly,
        7 daily; schema 8 weekly; globals like full; data none (kept).
    type: dict
  timezone:
    description:
      - The IANA time zone (V(UTC), V(Europe/Berlin)) in which hours, days, weeks, months and years of
        the slots begin.
      - If not set, E(BACKUP_TIMEZONE), the configuration file's C(backup.timezone), then V(UTC) are used.
    type: str
  leftover_grace:
    description:
      - Remove files that no manifest names (data files of interrupted runs) once they are older than this.
      - A duration such as V(30m), V(6h), V(2d) or V(1w), or a number of seconds.
      - If not set, V(6h) is used.
    type: raw
  lock_wait:
    description:
      - How long to wait for another run (a backup, a verification) to release the repository lock before
        failing at step C(lock). A duration or a number of seconds.
    type: raw
    default: 30s
seealso:
  - module: seawall.pgbackup.pg_backup
  - module: seawall.pgbackup.pg_backup_info
notes:
  - Returned paths are on the managed host.
'''

EXAMPLES = r'''
- name: Show what the configured policy would delete
  seawall.pgbackup.pg_backup_retention:
    backup_dir: /var/backups/postgresql
  check_mode: true
  register: retention_plan

- name: Keep 7 daily, 4 weekly and 12 monthly full backups (Berlin days) and 8 weekly schema backups
  seawall.pgbackup.pg_backup_retention:
    backup_dir: /var/backups/postgresql
    timezone: Europe/Berlin
    policy:
      full:
        daily: 7
        weekly: 4
        monthly: 12
        min_keep: 3
      schema:
        weekly: 8

- name: Apply the policy of the configuration file, removing interrupted runs older than a day
  seawall.pgbackup.pg_backup_retention:
    backup_dir: /var/backups/postgresql
    config_file: /etc/seawall/pgbackup.json
    leftover_grace: 1d
  register: retention

- name: List what was deleted
  ansible.builtin.debug:
    msg: "{{ retention.deleted }}"
'''

RETURN = r'''
plan:
  description: One decision per backup of the repository, oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: The backup's id.
      type: str
      sample: full-vtt-20261124T020000Z
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
      sample: "2026-11-24T02:00:00.000000Z"
    action:
      description: V(keep) or V(delete).
      type: str
      sample: keep
    reasons:
      description: Why, for example C(daily slot 2026-11-24), C(weekly slot 2026-W48), C(monthly slot 2026-11),
        C(newest good full), C(parent of ...), C(keep_last 3), C(min_keep 2), C(expired), C(failed verification),
        C(no retention policy for data (kept)) or why nothing of its type is deleted.
      type: list
      elements: str
      sample: ["daily slot 2026-11-24", "weekly slot 2026-W48"]
    good:
      description: Whether the backup is good (complete and not failed verification).
      type: bool
      sample: true
    verified:
      description: Whether its last verification succeeded.
      type: bool
      sample: false
    parent:
      description: The id of the backup it depends on, V(null) for none.
      type: str
      sample: null
notes:
  description: Per C(type/database), why nothing of it is deleted (or that it has no policy).
  returned: success
  type: dict
  sample: {"full/vtt": "newest full is not good: nothing of this kind is deleted"}
kept:
  description: Ids of the backups kept.
  returned: success
  type: list
  elements: str
to_delete:
  description: Ids of the backups the plan deletes (in check mode, would delete).
  returned: success
  type: list
  elements: str
deleted:
  description: Ids of the backups deleted by this run; empty in check mode.
  returned: success
  type: list
  elements: str
  sample: [full-vtt-20261015T020000Z]
leftovers_removed:
  description: Paths of the leftover files removed by this run; empty in check mode.
  returned: success
  type: list
  elements: str
leftovers_to_remove:
  description: Paths of the leftover files older than O(leftover_grace) (in check mode, would be removed).
  returned: success
  type: list
  elements: str
leftovers_kept:
  description: Paths of leftover files left in place, younger than O(leftover_grace) or named like an unreadable manifest.
  returned: success
  type: list
  elements: str
wal:
  description:
    - The WAL archive's plan (C(wal/) of the repository), V(null) when nothing is archived there. It keeps exactly
      what the kept base and incremental backups need - from each one's first segment on, on its timeline and
      later ones, and every history file.
    - C(files), C(keep), C(delete) are counts; C(ranges) the removed files as runs per timeline (not every name);
      C(kept_from) the first kept segment per timeline; C(needed_by) the kept backups that need WAL; C(note) why
      nothing is removed (no kept base backup, or an unreadable base/incremental manifest), else V(null).
  returned: success
  type: dict
  sample: {"files": 40, "keep": 25, "delete": 15, "note": null, "needed_by": [base-vtt-20261126T020000Z],
           "ranges": ["timeline 1: 000000010000000000000001..00000001000000000000000F (15 files)"],
           "kept_from": {"1": "000000010000000000000010"}}
wal_removed:
  description: How many archived WAL files this run removed; V(0) in check mode.
  returned: success
  type: int
  sample: 15
policies:
  description: The effective policy of every type (counts of V(0) left out).
  returned: success
  type: dict
  sample: {"full": {"daily": 7, "weekly": 4, "monthly": 12}, "data": {}}
timezone:
  description: The time zone of the slots.
  returned: success
  type: str
  sample: UTC
backup_dir:
  description: The absolute path of the backup repository on the managed host.
  returned: success
  type: str
  sample: /var/backups/postgresql
step:
  description: The step that failed (for example V(config), V(lock), V(cleanup)).
  returned: failure
  type: str
  sample: lock
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    engine_errors,
    pgbackup_common_argument_spec,
    pgbackup_config,
    run_operation,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.cleanup import (
    changed,
    diff,
    plan_cleanup,
    run_cleanup,
)

INTERNAL = ('dry_run', 'now', 'leftover_grace_seconds')  # in the CLI's JSON, not in the module's result


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        policy=dict(type='dict'),
        timezone=dict(type='str'),
        leftover_grace=dict(type='raw'),
        lock_wait=dict(type='raw', default='30s'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cfg = pgbackup_config(module)
    result = dict(changed=False, plan=[], deleted=[], leftovers_removed=[])
    options = dict(policies=module.params['policy'], tz=module.params['timezone'],
                   leftover_grace=module.params['leftover_grace'])

    if module.check_mode:
        with engine_errors(module, **result):
            outcome = plan_cleanup(cfg, **options)
    else:
        outcome = run_operation(module, cfg, 'cleanup', None,
                                lambda: run_cleanup(cfg, lock_wait=module.params['lock_wait'], **options), **result)
    result.update((key, value) for key, value in outcome.items() if key not in INTERNAL)
    result['changed'] = changed(outcome)
    if module._diff:
        result['diff'] = diff(outcome)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
