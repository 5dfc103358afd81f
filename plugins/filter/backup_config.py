# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: backup_config
short_description: The seawall-pgbackup configuration document of a host, in the users' JSON shape
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Builds the document the C(seawall-pgbackup) command reads (C(--config) or C(BACKUP_CONFIG)), in the users'
    shape, one C(backup) object with C(types), C(destinations), C(monitoring), C(directory), C(timezone) and so on.
  - Starts from the users' configuration (the input, normally C(pgbackup_config)) and sets, per backup kind,
    C(enabled) and C(schedule) from the jobs of R(seawall.pgbackup.schedule_jobs,ansible_collections.seawall.pgbackup.schedule_jobs_filter),
    so the engine's health check expects exactly the backups the host schedules; C(cleanup.schedule), C(verify.schedule)
    and C(monitoring.healthChecks.schedule) likewise (C(false) when the job is not scheduled), which
    C(seawall-pgbackup schedule) reads.
  - Sets C(directory), C(timezone), C(compression), C(pgBinDir) and C(databaseUrl) when given.
  - A O(database_url) holding a password is refused, because the password belongs in a passfile, never in this file.
options:
  _input:
    description: The users' configuration document; may be empty.
    type: dict
    required: true
  jobs:
    description: The output of C(seawall.pgbackup.schedule_jobs).
    type: list
    elements: dict
    required: true
  directory:
    description: The backup directory (C(backup.directory)).
    type: string
    default: ''
  timezone:
    description: Time zone of the retention slots (C(backup.timezone)).
    type: string
    default: ''
  compression:
    description: C(gzip), C(zstd) or C(none) (C(backup.compression)); empty keeps the document's or the engine's default.
    type: string
    default: ''
  pg_bin_dir:
    description: Directory of the PostgreSQL client tools (C(backup.pgBinDir)); empty lets the engine choose.
    type: string
    default: ''
  database_url:
    description: The database URL without a password (C(backup.databaseUrl)); empty leaves it to C(DATABASE_URL).
    type: string
    default: ''
"""

EXAMPLES = r"""
- name: Render the configuration file
  ansible.builtin.copy:
    dest: /etc/seawall-pgbackup/config.json
    mode: "0640"
    content: "{{ pgbackup_config | seawall.pgbackup.backup_config(jobs=pgbackup_jobs, directory='/var/backups/postgresql') | to_nice_json }}"
"""

RETURN = r"""
_value:
  description: The configuration document.
  type: dict
"""

import copy

from ansible.errors import AnsibleFilterError

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.connection import redact_url


_JOB_KEYS = {'cleanup': ('cleanup',), 'verify': ('verify',), 'health': ('monitoring', 'healthChecks')}


def backup_config(config, jobs, directory='', timezone='', compression='', pg_bin_dir='', database_url=''):
    """The users' document with the host's schedules, directory and settings filled in."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise AnsibleFilterError('backup_config: the configuration must be a dictionary {"backup": {...}}, got %s'
                                 % type(config).__name__)
    unknown_top = sorted(set(config) - {'backup'})
    if unknown_top:
        raise AnsibleFilterError('backup_config: unknown top-level key(s) %s: the document is {"backup": {...}}'
                                 % ', '.join(unknown_top))
    backup = copy.deepcopy(config.get('backup') or {})
    if not isinstance(backup, dict):
        raise AnsibleFilterError('backup_config: backup must be a dictionary, got %s' % type(backup).__name__)
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and 'name' in j for j in jobs):
        raise AnsibleFilterError('backup_config: jobs must be the list returned by seawall.pgbackup.schedule_jobs')
    types = backup.setdefault('types', {})
    if not isinstance(types, dict):
        raise AnsibleFilterError('backup_config: backup.types must be a dictionary')
    for job in jobs:
        if job.get('kind'):
            own = types.setdefault(job['kind'], {})
            if not isinstance(own, dict):
                raise AnsibleFilterError('backup_config: backup.types.%s must be a dictionary' % job['kind'])
            own['enabled'] = bool(job.get('enabled'))
            if job.get('schedule'):
                own['schedule'] = job['schedule']
            else:
                own.pop('schedule', None)
        elif job['name'] in _JOB_KEYS:
            # the foreground scheduler (seawall-pgbackup schedule) reads these; false: not scheduled here
            block = backup
            for key in _JOB_KEYS[job['name']]:
                block = block.setdefault(key, {})
                if not isinstance(block, dict):
                    raise AnsibleFilterError('backup_config: backup.%s must be a dictionary'
                                             % '.'.join(_JOB_KEYS[job['name']]))
            block['schedule'] = job['schedule'] if job.get('enabled') else False
    for key, value in (('directory', directory), ('timezone', timezone), ('compression', compression),
                       ('pgBinDir', pg_bin_dir)):
        if value not in (None, ''):
            backup[key] = str(value)
    if 'databaseUrl' in backup and redact_url(str(backup['databaseUrl'])) != str(backup['databaseUrl']):
        raise AnsibleFilterError('backup_config: backup.databaseUrl holds a password; keep it in a passfile instead')
    if database_url not in (None, ''):
        text = str(database_url)
        if redact_url(text) != text:
            raise AnsibleFilterError('backup_config: database_url holds a password; pass the URL without it '
                                     '(seawall.pgbackup.database_url_parts gives it) and keep the password in a passfile')
        backup['databaseUrl'] = text
    return {'backup': backup}


class FilterModule(object):
    """seawall.pgbackup.backup_config"""

    def filters(self):
        return {'backup_config': backup_config}
