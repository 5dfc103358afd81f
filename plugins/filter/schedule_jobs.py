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

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.jobs import job_table
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import BackupError


def schedule_jobs(schedules, config=None, incremental=False, verify_arguments=None, base=False):
    """Every known job with its effective schedule, arguments and whether it is scheduled (the engine's table)."""
    try:
        return [job.as_dict() for job in job_table(schedules, config, incremental, verify_arguments, base)]
    except BackupError as exc:
        raise AnsibleFilterError("schedule_jobs: %s" % exc) from None


class FilterModule(object):
    """seawall.pgbackup.schedule_jobs"""

    def filters(self):
        return {'schedule_jobs': schedule_jobs}
