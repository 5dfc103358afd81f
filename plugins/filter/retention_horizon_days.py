# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: retention_horizon_days
short_description: The age in days of the oldest backup the retention policy can keep, plus a margin
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Reads the users' configuration document with the engine's own parser (so the built-in retention defaults
    are the engine's) and returns, over every enabled backup kind, the largest of C(yearly) x 366,
    C(monthly) x 31, C(weekly) x 7, C(daily) and C(hourly) / 24 (rounded up) days, plus O(margin_days).
  - With the strategy's defaults (full backups kept 7 daily, 4 weekly, 12 monthly) that is 372 + 31 = 403 days,
    about 13 months. The cloud role expires objects older than this, a safety net behind the engine's own
    retention, which deletes first.
  - C(keep_last) and C(min_keep) are counts, not ages, and do not lengthen the horizon.
options:
  _input:
    description: 'The users'' configuration document C({"backup": {...}}); may be empty.'
    type: dict
    required: true
  margin_days:
    description: Days added to the oldest age the policy keeps.
    type: int
    default: 31
"""

EXAMPLES = r"""
- name: Expire cloud copies a month after the retention horizon
  ansible.builtin.debug:
    msg: "{{ pgbackup_config | seawall.pgbackup.retention_horizon_days(margin_days=31) }}"
"""

RETURN = r"""
_value:
  description: Days.
  type: int
"""

import math

from ansible.errors import AnsibleFilterError
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.settings import (apply_json,
                                                                                                default_config)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import BackupError

SLOT_DAYS = {'yearly': 366, 'monthly': 31, 'weekly': 7, 'daily': 1}


def retention_horizon_days(config, margin_days=31):
    """Days from now to the oldest backup the policy keeps, plus a margin."""
    if isinstance(margin_days, bool) or not isinstance(margin_days, int) or margin_days < 0:
        raise AnsibleFilterError('retention_horizon_days: margin_days=%r is not valid: use a whole number >= 0'
                                 % (margin_days,))
    cfg = default_config()
    if config:
        if not isinstance(config, dict):
            raise AnsibleFilterError('retention_horizon_days: the configuration must be a dictionary {"backup": {...}}, got %s'
                                     % type(config).__name__)
        try:
            apply_json(cfg, config, 'pgbackup_config')
        except BackupError as exc:
            raise AnsibleFilterError('retention_horizon_days: %s' % exc) from None
    longest = 0
    for settings in cfg.kinds.values():
        if not settings.enabled:
            continue
        retention = settings.retention
        days = [retention.get(slot, 0) * factor for slot, factor in SLOT_DAYS.items()]
        days.append(math.ceil(retention.get('hourly', 0) / 24.0))
        longest = max([longest] + days)
    return longest + margin_days


class FilterModule(object):
    """seawall.pgbackup.retention_horizon_days"""

    def filters(self):
        return {'retention_horizon_days': retention_horizon_days}
