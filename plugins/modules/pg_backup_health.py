#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup_health
short_description: Health of a seawall backup repository - connectivity, backup age, checksums, disk, runs, drills
version_added: 0.1.0
description:
  - Runs the checks of C(seawall-pgbackup health) on the managed host and returns each with a status
    (V(ok), V(warning) or V(critical)) and a reason, plus the overall status and its Nagios exit code
    (0 ok, 1 warning, 2 critical).
  - Database connectivity (psql is stopped after C(monitoring.healthChecks.connectTimeoutSeconds)).
  - The backup directory can be read and written (critical when read-only or unreadable), and every
    manifest in it parses (critical, naming each one that cannot be trusted).
  - The age of the newest good backup of every scheduled kind against its cron schedule (a daily
    full older than 26 hours is critical, older than 24.5 hours a warning). A backup dated in the future
    never counts as the newest one.
  - Clock skew - backups dated more than 5 minutes ahead of this host's clock are a warning, by name.
  - The sha256 of the newest good backup of every scheduled kind against its manifest.
  - Free space of the backup directory against C(diskWarningPercent) and C(diskCriticalPercent), and
    a projection from the recent full backups' size ("room for N more fulls").
  - The last run of every job (from C(logs/last-run-<job>.json)); a failed one is critical.
  - The last DR drill (C(logs/drill-latest.json)) - failed is critical, older than C(drillMaxAge) a warning.
  - Thresholds come from the configuration file's C(backup.monitoring.healthChecks) block.
  - Reads only; never changes anything, so C(changed) is always false. The task fails when the
    overall status reaches O(fail_on).
author:
  - Seawall Platform Team (@seawall)
extends_documentation_fragment:
  - seawall.pgbackup.common
  - seawall.pgbackup.common.client_tools
  - seawall.pgbackup.common.trust
attributes:
  check_mode:
    support: full
    description: The checks only read, so they run in check mode too.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  database_url:
    description:
      - The database whose backups are checked, as a libpq URL C(postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME) -
        the connectivity check connects to it (O(connect)), and the age checks look at the newest backups of
        this database (of any database when not set).
      - Without it, the connectivity check is critical unless O(connect=false).
      - If not set, the E(DATABASE_URL) environment variable of the module (set it with the
        C(environment) keyword), then the configuration file's C(backup.databaseUrl) are used.
      - The password never reaches a command line; the client tools get it from a private,
        temporary libpq passfile (mode 0600). You can leave it out of the URL and use your own
        E(PGPASSFILE) or C(~/.pgpass) instead.
      - The value is treated as a secret (C(no_log)); results show the URL without its password.
    type: str
  encryption_mode:
    description:
      - How new backups are encrypted, C(aes-256-gcm) or C(age) - here it decides which key ids the keys check
        counts as the ones new backups are written with (see O(encryption_retired_keys)).
      - If not set, E(BACKUP_ENCRYPTION_MODE), then the configuration file's C(backup.encryption.mode) are used.
    type: str
    choices: [aes-256-gcm, age]
  encryption_retired_keys:
    description:
      - Key ids that are retired (still read, never meant to be written); the keys check warns while a local
        backup, a copy at a destination, or new backups still depend on one, so that its key file can go only
        when nothing needs it.
      - If not set, E(BACKUP_ENCRYPTION_RETIRED_KEYS) (comma separated), then the configuration file's
        C(backup.encryption.retiredKeys) are used.
    type: list
    elements: str
  fail_on:
    description:
      - Fail the task when the overall status is this bad or worse.
      - V(never) only reports.
    type: str
    choices: [critical, warning, never]
    default: critical
  connect:
    description:
      - Check the database connection. V(false) leaves the database out (only the repository is checked).
    type: bool
    default: true
requirements:
  - PostgreSQL client tools (C(psql)) on the managed host for the connectivity check.
seealso:
  - module: seawall.pgbackup.pg_backup_info
  - module: seawall.pgbackup.pg_backup_verify
notes:
  - The same checks run as C(seawall-pgbackup health) on the host (and on the C(/healthz) page of C(seawall-pgbackup serve)).
  - Outside check mode a run is recorded and notified like the scheduled health job's (C(logs/last-run-health.json),
    metrics, a notification when the status changes); in check mode the checks run without that.
'''

EXAMPLES = r'''
- name: Check the backups of this host, failing only on critical
  seawall.pgbackup.pg_backup_health:
    backup_dir: /var/backups/postgresql
    config_file: /etc/seawall-pgbackup/config.json
  environment:
    DATABASE_URL: "{{ vault_database_url }}"
  register: pgbackup_health

- name: Report every check that is not OK
  ansible.builtin.debug:
    msg: "{{ pgbackup_health.checks | rejectattr('status', 'equalto', 'ok') | list }}"

- name: Only the repository, never failing
  seawall.pgbackup.pg_backup_health:
    backup_dir: /var/backups/postgresql
    connect: false
    fail_on: never
'''

RETURN = r'''
status:
  description: The worst status of all checks.
  returned: always
  type: str
  sample: warning
exit_code:
  description: The Nagios code of RV(status) - 0 ok, 1 warning, 2 critical.
  returned: always
  type: int
  sample: 1
checks:
  description: Every check, with its name, status, reason and check-specific values.
  returned: always
  type: list
  elements: dict
  sample:
    - check: connectivity
      status: ok
      reason: connected to PostgreSQL 15.14 as backup
      seconds: 0.041
    - check: age:full
      status: ok
      reason: "newest full-vtt-20260126T020000Z is 3h05m old; schedule '0 2 * * *' runs every 24h00m"
      newest: full-vtt-20260126T020000Z
      age_seconds: 11100
    - check: disk
      status: warning
      reason: 18.2 GiB free of 100.0 GiB (18.2%); room for 3 more fulls of 5.1 GiB
      free_bytes: 19541180416
      total_bytes: 107374182400
      free_percent: 18.2
      room_for_fulls: 3
backup_dir:
  description: The absolute path of the backup repository on the managed host.
  returned: always
  type: str
  sample: /var/backups/postgresql
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    engine_errors,
    pgbackup_common_argument_spec,
    pgbackup_config,
    run_operation,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.health import failure, health


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        fail_on=dict(type='str', choices=['critical', 'warning', 'never'], default='critical'),
        connect=dict(type='bool', default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cfg = pgbackup_config(module)
    result = dict(changed=False, backup_dir=os.path.abspath(cfg.backup_dir))
    if module.check_mode:  # the checks only read; check mode just leaves out the run record and notifications
        with engine_errors(module, **result):
            report = health(cfg, connect=module.params['connect'])
    else:
        reports = []

        def check():
            reports.append(health(cfg, connect=module.params['connect']))
            return reports[-1]

        # Recorded and notified like the scheduled health job: last-run-health.json, metrics, state changes.
        report = run_operation(module, cfg, 'health', None, check, report=lambda: reports[-1],
                               exit_code=lambda done: done['exit_code'], **result)
    result.update(status=report['status'], exit_code=report['exit_code'], checks=report['checks'])
    message = failure(report, module.params['fail_on'])
    if message:
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
