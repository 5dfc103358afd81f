#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup_info
short_description: List the backups in a seawall backup repository
version_added: 0.1.0
description:
  - Lists the complete (manifested) backups of a backup repository, oldest first, as
    C(seawall-pgbackup list --json) does.
  - Data files without a manifest (incomplete backups) are never listed; unreadable manifests are skipped.
  - Never changes anything and never connects to a database.
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
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
options:
  type:
    description:
      - List only backups of this kind.
    type: str
    choices: [full, incremental, schema, data, globals, base]
  database:
    description:
      - List only backups of this database.
      - O(database_url) does not filter; set this option to narrow the list to one database.
    type: str
  newest_only:
    description:
      - Return only the newest matching backup (of each type when O(type) is not set).
    type: bool
    default: false
  include_bad:
    description:
      - Also list backups that are not good (a recorded verification failed, a data file is missing), each
        with its RV(backups[].reason), and then every manifest that is not valid (with RV(backups[].id) V(null));
        such a manifest is never acted on, only shown (the CLI's C(list --all)).
    type: bool
    default: false
seealso:
  - module: seawall.pgbackup.pg_backup
notes:
  - Returned paths are on the managed host.
'''

EXAMPLES = r'''
- name: List every good backup
  seawall.pgbackup.pg_backup_info:
    backup_dir: /var/backups/postgresql
  register: listing

- name: The newest good full backup of vtt
  seawall.pgbackup.pg_backup_info:
    backup_dir: /var/backups/postgresql
    type: full
    database: vtt
    newest_only: true
  register: newest

- name: Fail when there is no full backup yet
  ansible.builtin.assert:
    that: newest.backups | length == 1
    fail_msg: "No good full backup of vtt in /var/backups/postgresql"
'''

RETURN = r'''
backups:
  description: The matching backups, oldest first.
  returned: success
  type: list
  elements: dict
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
      description: V(logical) (pg_dump, pg_dumpall) or V(physical) (pg_basebackup, type V(base)).
      type: str
      sample: logical
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
    reason:
      description: Why the backup is not good, or why its manifest is not valid.
      returned: when O(include_bad=true) and the backup is not good
      type: str
      sample: "full-vtt-20260126T020000Z: restored rows differ: public.players has 9 rows, the backup recorded 10"
backup_dir:
  description: The absolute path of the backup repository on the managed host.
  returned: success
  type: str
  sample: /var/backups/postgresql
exists:
  description: Whether the backup repository directory exists.
  returned: success
  type: bool
  sample: true
step:
  description: The step that failed.
  returned: failure
  type: str
  sample: config
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.seawall.pgbackup.plugins.module_utils.common import (
    pgbackup_common_argument_spec,
    pgbackup_config,
    run_operation,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.listing import list_backups


def main():
    argument_spec = pgbackup_common_argument_spec()
    argument_spec.update(
        type=dict(type='str', choices=['full', 'incremental', 'schema', 'data', 'globals', 'base']),
        database=dict(type='str'),
        newest_only=dict(type='bool', default=False),
        include_bad=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cfg = pgbackup_config(module)
    backup_dir = os.path.abspath(cfg.backup_dir)
    result = dict(changed=False, backups=[], backup_dir=backup_dir, exists=os.path.isdir(backup_dir))
    # Listing reads only, so it runs in check mode too; it is not a monitored command (no run record).
    result['backups'] = run_operation(
        module, cfg, 'list', None,
        lambda: list_backups(cfg, kind=module.params['type'], database=module.params['database'],
                             include_bad=module.params['include_bad'], newest_only=module.params['newest_only']),
        **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
