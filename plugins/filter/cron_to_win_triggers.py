# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: cron_to_win_triggers
short_description: Convert a simple cron expression to community.windows.win_scheduled_task triggers
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Converts the cron shapes the users' schedules use into the O(community.windows.win_scheduled_task#module:triggers)
    list of that module, in the host's local time (like cron).
  - Supported, with C(*) as day-of-month and month; day-of-week C(*) gives C(daily) triggers, anything
    else (C(1), C(mon-fri), C(0,6)) C(weekly) triggers on those days.
  - C(M H * * *) and lists or ranges of minutes and hours (C(0 2,14 * * *)), one trigger per time, at most 48.
  - C(M * * * *), every hour at minute M (one daily trigger per minute value, repeated every hour for a day).
  - C(*/N * * * *) with N dividing 60, every N minutes (repeated every N minutes for a day); with a list of
    hours (C(*/15 9-17 * * *)) one trigger per hour, repeated for that hour.
  - The macros C(@hourly), C(@daily), C(@midnight) and C(@weekly).
  - Anything else (a day of the month, a month, more than 48 times a day without a repeatable step,
    C(@reboot)) fails with a one-line error naming the expression, instead of scheduling something else.
options:
  _input:
    description: The cron expression.
    type: string
    required: true
  start_date:
    description: The date of every trigger's C(start_boundary) (C(YYYY-MM-DD)); a fixed date keeps the role idempotent.
    type: string
    default: '2026-01-01'
  random_delay:
    description:
      - A random delay added to each start, as seconds or with a unit C(s), C(m) or C(h) (C(5m)), like the
        systemd timers' C(RandomizedDelaySec=); C(0) or empty for none.
    type: raw
    default: ''
"""

EXAMPLES = r"""
- name: Daily at 02:00, randomly delayed up to 5 minutes
  ansible.builtin.debug:
    # [{'type': 'daily', 'start_boundary': '2026-01-01T02:00:00', 'random_delay': 'PT5M'}]
    msg: "{{ '0 2 * * *' | seawall.pgbackup.cron_to_win_triggers(random_delay='5m') }}"
"""

RETURN = r"""
_value:
  description: Triggers for O(community.windows.win_scheduled_task#module:triggers).
  type: list
  elements: dict
"""

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.cron import Cron
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import BackupError

MACROS = {'@hourly': '0 * * * *', '@daily': '0 0 * * *', '@midnight': '0 0 * * *', '@weekly': '0 0 * * 0'}
WEEKDAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday']  # cron's numbering
MAX_TRIGGERS = 48
SUPPORTED = ("supported: 'M H * * *', 'M H * * DOW', 'M * * * *', '*/N * * * *' (N divides 60), lists and ranges "
             "of minutes and hours, @hourly, @daily, @weekly")


def _iso_duration(value):
    if value in (None, '', 0, '0'):
        return ''
    match = re.match(r'^\s*(\d+)\s*(s|sec|m|min|h|hour)?\s*$', str(value))
    if not match:
        raise AnsibleFilterError("cron_to_win_triggers: random_delay=%r is not valid: use seconds or a number with "
                                 "s, m or h, such as '5m'" % (value,))
    number, unit = int(match.group(1)), (match.group(2) or 's')[0]
    if number == 0:
        return ''
    return 'PT%d%s' % (number, unit.upper())


def _fail(expression, why):
    raise AnsibleFilterError('cron expression %r cannot be converted to Windows scheduled task triggers: %s; %s'
                             % (expression, why, SUPPORTED))


def cron_to_win_triggers(expression, start_date='2026-01-01', random_delay=''):
    """win_scheduled_task triggers that start when cron would run ``expression``."""
    if not isinstance(expression, str):
        raise AnsibleFilterError("cron_to_win_triggers expects a cron expression string such as '0 2 * * *', got %s"
                                 % type(expression).__name__)
    if not re.match(r'^\d{4}-\d{2}-\d{2}$', str(start_date)):
        raise AnsibleFilterError('cron_to_win_triggers: start_date=%r is not valid: use YYYY-MM-DD' % (start_date,))
    text = ' '.join(expression.split())
    if text.startswith('@'):
        if text.lower() not in MACROS:
            _fail(expression, 'unsupported macro')
        text = MACROS[text.lower()]
    try:
        cron = Cron(text)
    except BackupError as exc:
        raise AnsibleFilterError(str(exc)) from None
    minute_field, hour_field, dom_field, month_field, dow_field = text.split()
    minutes, hours, days, months, weekdays = cron.sets
    if dom_field != '*' or len(days) != 31:
        _fail(expression, 'a day of the month is not supported')
    if month_field != '*' or len(months) != 12:
        _fail(expression, 'a month is not supported')
    delay = _iso_duration(random_delay)

    base = {'type': 'daily'}
    if dow_field != '*' and len(weekdays) < 7:
        base = {'type': 'weekly', 'days_of_week': ','.join(WEEKDAYS[d] for d in sorted(weekdays)), 'weeks_interval': 1}
    all_hours = len(hours) == 24

    step = re.match(r'^\*(?:/(\d+))?$', minute_field)
    every = int(step.group(1) or 1) if step else None
    if every is not None and (every >= 60 or 60 % every):
        every = None  # not a uniform repetition: treat the minutes as a list

    starts = []  # (hour, minute, repetition)
    if every is not None:
        interval = 'PT%dM' % every
        if all_hours:
            starts.append((0, 0, {'interval': interval, 'duration': 'P1D', 'stop_at_duration_end': False}))
        else:
            starts.extend((h, 0, {'interval': interval, 'duration': 'PT1H', 'stop_at_duration_end': False})
                          for h in sorted(hours))
    elif all_hours:
        starts.extend((0, m, {'interval': 'PT1H', 'duration': 'P1D', 'stop_at_duration_end': False})
                      for m in sorted(minutes))
    else:
        starts.extend((h, m, None) for h in sorted(hours) for m in sorted(minutes))
    if len(starts) > MAX_TRIGGERS:
        _fail(expression, '%d start times a day need more than %d triggers' % (len(starts), MAX_TRIGGERS))

    triggers = []
    for hour, minute, repetition in starts:
        trigger = dict(base, start_boundary='%sT%02d:%02d:00' % (start_date, hour, minute))
        if repetition:
            trigger['repetition'] = repetition
        if delay:
            trigger['random_delay'] = delay
        triggers.append(trigger)
    return triggers


class FilterModule(object):
    """seawall.pgbackup.cron_to_win_triggers"""

    def filters(self):
        return {'cron_to_win_triggers': cron_to_win_triggers}
