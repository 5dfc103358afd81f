# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: schedule_jobs
short_description: The scheduled seawall-pgbackup jobs of a host, from role variables and the users' configuration
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Used by the C(seawall.pgbackup.tooling) role (the job schedules it writes into C(config.json), which
    the engine's health check reads) and the C(seawall.pgbackup.schedule) role (one timer, cron entry or
    scheduled task per enabled job), so both always agree.
  - Input is a dictionary of job name to cron expression, normally built from the role variables
    C(pgbackup_schedule_<job>). An empty or missing expression means the job is not scheduled.
  - For the backup kinds C(full), C(base), C(incremental), C(schema), C(data) and C(globals), the users' configuration
    (O(config), its C(backup.types.<kind>.schedule) and C(backup.types.<kind>.enabled)) wins over the
    input; C(backup.cleanup.schedule) likewise for C(cleanup). C(monitoring.healthChecks.enabled=false) turns the
    C(health) job off.
  - C(incremental) is scheduled only when O(incremental=true) and C(base) (the physical base backup the
    incremental chain starts from) only when O(base=true); a host that archives WAL (seawall.pgbackup.wal_archive)
    passes both.
  - Every job is returned, enabled or not, in a fixed order, so the roles can remove what is no longer scheduled.
  - Expressions are checked with the engine's own cron parser (5 fields, no macros, because the engine reads
    the same expressions from C(config.json)); an invalid one fails naming the job.
options:
  _input:
    description:
      - Job name to cron expression (keys C(full), C(base), C(incremental), C(schema), C(data), C(globals), C(cleanup),
        C(verify), C(health)).
    type: dict
    required: true
  config:
    description: The users' configuration document (C(pgbackup_config)); may be empty.
    type: dict
    default: {}
  incremental:
    description: Whether the C(incremental) job may be scheduled.
    type: boolean
    default: false
  base:
    description: Whether the C(base) job (a physical base backup) may be scheduled.
    type: boolean
    default: false
  verify_arguments:
    description: Arguments of C(seawall-pgbackup verify) for the C(verify) job.
    type: list
    elements: string
    default: [latest, --level, archive]
"""

EXAMPLES = r"""
- name: The jobs of this host
  ansible.builtin.debug:
    msg: "{{ {'full': '0 2 * * *', 'health': '*/15 * * * *'} | seawall.pgbackup.schedule_jobs(config=pgbackup_config) }}"
"""

RETURN = r"""
_value:
  description:
    - One entry per known job, in the order full, base, incremental, schema, data, globals, cleanup, verify, health.
  type: list
  elements: dict
  contains:
    name:
      description: The job name (also the systemd unit suffix, C(seawall-pgbackup-<name>)).
      type: string
    enabled:
      description: Whether the job is scheduled.
      type: boolean
    schedule:
      description: The cron expression (whitespace normalized), empty when the job has none.
      type: string
    kind:
      description: The backup kind for backup jobs, else empty.
      type: string
    arguments:
      description: The C(seawall-pgbackup) arguments of the job (never a secret).
      type: list
      elements: string
    locks:
      description: Whether the job takes the repository lock (the schedulers queue those jobs one after another).
      type: boolean
    description:
      description: A one-line description.
      type: string
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.collections import is_sequence

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.cron import Cron
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import BackupError

KINDS = ('full', 'base', 'incremental', 'schema', 'data', 'globals')
JOBS = KINDS + ('cleanup', 'verify', 'health')
DESCRIPTIONS = {
    'full': 'full backup (pg_dump custom format + globals)',
    'base': 'physical base backup (pg_basebackup)',
    'incremental': 'incremental backup',
    'schema': 'schema-only backup',
    'data': 'data-only backup',
    'globals': 'globals backup (roles, tablespaces)',
    'cleanup': 'retention cleanup',
    'verify': 'backup verification',
    'health': 'health check (connectivity, backup age)',
}


def _mapping(value, name):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AnsibleFilterError('schedule_jobs: %s must be a dictionary, got %s' % (name, type(value).__name__))
    return value


def _expression(job, value, where):
    if value is None or value is False:
        return ''
    if not isinstance(value, str):
        raise AnsibleFilterError('schedule_jobs: the schedule of job %s (%s) must be a cron string such as '
                                 "'0 2 * * *', got %r" % (job, where, value))
    text = ' '.join(value.split())
    if not text:
        return ''
    try:
        Cron(text)
    except BackupError as exc:
        raise AnsibleFilterError('schedule_jobs: job %s (%s): %s' % (job, where, exc)) from None
    return text


def _enabled(value, where):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('0', 'false', 'no', 'off'):
        return False
    raise AnsibleFilterError('schedule_jobs: %s=%r is not valid: use true or false' % (where, value))


def schedule_jobs(schedules, config=None, incremental=False, verify_arguments=None, base=False):
    """Every known job with its effective schedule, arguments and whether it is scheduled."""
    schedules = _mapping(schedules, 'the input')
    unknown = sorted(set(schedules) - set(JOBS))
    if unknown:
        raise AnsibleFilterError('schedule_jobs: unknown job(s) %s; known: %s' % (', '.join(unknown), ', '.join(JOBS)))
    backup = _mapping(_mapping(config, 'config').get('backup'), 'config.backup')
    types = _mapping(backup.get('types'), 'config.backup.types')
    if verify_arguments is None:
        verify_arguments = ['latest', '--level', 'archive']
    if not is_sequence(verify_arguments) or not all(isinstance(a, str) for a in verify_arguments):
        raise AnsibleFilterError('schedule_jobs: verify_arguments must be a list of strings')
    jobs = []
    for job in JOBS:
        where = 'pgbackup_schedule_%s' % job
        schedule = _expression(job, schedules.get(job), where)
        enabled = True
        kind = ''
        locks = job != 'health'
        if job in KINDS:
            kind = job
            own = _mapping(types.get(job), 'config.backup.types.%s' % job)
            if own.get('schedule') not in (None, ''):
                schedule = _expression(job, own['schedule'], 'config backup.types.%s.schedule' % job)
            if 'enabled' in own:
                enabled = _enabled(own['enabled'], 'config backup.types.%s.enabled' % job)
            if job == 'incremental' and not _enabled(incremental, 'incremental'):
                enabled = False
            if job == 'base' and not _enabled(base, 'base'):
                enabled = False
            arguments = ['create', '--type', job]
        elif job == 'cleanup':
            cleanup = _mapping(backup.get('cleanup'), 'config.backup.cleanup')
            if cleanup.get('schedule') not in (None, ''):
                schedule = _expression(job, cleanup['schedule'], 'config backup.cleanup.schedule')
            arguments = ['cleanup']
        elif job == 'verify':
            arguments = ['verify'] + list(verify_arguments)
        else:
            monitoring = _mapping(backup.get('monitoring'), 'config.backup.monitoring')
            checks = _mapping(monitoring.get('healthChecks'), 'config.backup.monitoring.healthChecks')
            if 'enabled' in checks:
                enabled = _enabled(checks['enabled'], 'config backup.monitoring.healthChecks.enabled')
            arguments = ['health']
        jobs.append({
            'name': job,
            'enabled': bool(enabled and schedule),
            'schedule': schedule,
            'kind': kind,
            'arguments': arguments,
            'locks': locks,
            'description': DESCRIPTIONS[job],
        })
    return jobs


class FilterModule(object):
    """seawall.pgbackup.schedule_jobs"""

    def filters(self):
        return {'schedule_jobs': schedule_jobs}
