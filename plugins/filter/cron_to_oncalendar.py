# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: cron_to_oncalendar
short_description: Convert a cron expression to systemd OnCalendar= values
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Converts a 5-field cron expression (minute hour day-of-month month day-of-week) or a macro into
    systemd timer C(OnCalendar=) values that fire at exactly the same minutes as cron.
  - Fields accept numbers, C(*), ranges C(1-5), steps C(*/15), C(1-10/2) and C(5/15) (from 5 to the end),
    lists C(1,15), month names C(jan)..C(dec) and weekday names C(sun)..C(sat), case-insensitive;
    C(0) and C(7) both mean Sunday.
  - Macros C(@hourly), C(@daily), C(@midnight), C(@weekly), C(@monthly), C(@yearly) and C(@annually) are accepted.
  - Returns a list because one value is not always enough. When both day-of-month and day-of-week are
    restricted (neither is C(*)), cron runs when EITHER matches, whereas systemd requires both; the
    filter then returns two values, one per side. A timer with several C(OnCalendar=) lines elapses at
    the union of them, so write one line per list item.
  - The parsing and the matching rules are those of the collection's engine (the same code the
    backup-age checks use), so a day field is "restricted" when it is anything but a lone C(*).
  - Values that can never elapse (such as February 30 in C(0 0 30 2 mon)) are left out. An expression
    that never fires at all (C(0 0 30 2 *)), C(@reboot) (not a calendar event; use C(OnBootSec=)),
    an unknown macro and an invalid expression fail with a one-line error naming the expression.
  - Without O(timezone) the values are in the host's local time, like cron, so on days when daylight
    saving time changes, systemd's handling of missing or repeated local times applies rather than
    cron's. Use O(timezone=UTC) to avoid that.
options:
  _input:
    description: The cron expression, for example C(0 2 * * *), or a macro such as C(@daily).
    type: string
    required: true
  timezone:
    description:
      - A time zone name appended to every value (for example C(UTC) or C(Europe/Berlin)); needs systemd 235 or later.
      - Only the syntax is checked here; the managed host's tz database must know the name.
      - Empty or omitted means the host's local time.
    type: string
    default: ''
  single:
    description:
      - Return one string instead of a list.
      - Fails when the expression needs more than one value (both day fields restricted).
    type: boolean
    default: false
seealso:
  - name: systemd.time(7)
    description: Calendar event syntax of systemd.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.time.html
  - name: crontab(5)
    description: Cron expression syntax.
    link: https://man7.org/linux/man-pages/man5/crontab.5.html
"""

EXAMPLES = r"""
- name: Every day at 02:00 (returns ['*-*-* 02:00:00'])
  ansible.builtin.debug:
    msg: "{{ '0 2 * * *' | seawall.pgbackup.cron_to_oncalendar }}"

- name: The 13th of each month or any Friday, at midnight (returns ['*-*-13 00:00:00', 'Fri *-*-* 00:00:00'])
  ansible.builtin.debug:
    msg: "{{ '0 0 13 * fri' | seawall.pgbackup.cron_to_oncalendar }}"

- name: Every 30 minutes, in UTC, as one string (returns '*-*-* *:00,30:00 UTC')
  ansible.builtin.debug:
    msg: "{{ '*/30 * * * *' | seawall.pgbackup.cron_to_oncalendar(timezone='UTC', single=true) }}"

- name: A systemd timer from a cron schedule (one OnCalendar= line per value)
  ansible.builtin.copy:
    dest: /etc/systemd/system/pgbackup-full.timer
    mode: "0644"
    content: |
      [Timer]
      {% for spec in pgbackup_schedule_full | seawall.pgbackup.cron_to_oncalendar %}
      OnCalendar={{ spec }}
      {% endfor %}
      Persistent=true
"""

RETURN = r"""
_value:
  description:
    - C(OnCalendar=) values in systemd's normalized form, whose union fires exactly when cron would run the expression.
    - One value, or two when both day-of-month and day-of-week are restricted.
    - A single string instead of a list when O(single=true).
  type: list
  elements: string
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import BackupError
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.oncalendar import to_oncalendar


def cron_to_oncalendar(expression, timezone='', single=False):
    """The OnCalendar= values for a cron expression (a list, or one string when ``single``)."""
    if not isinstance(expression, str):
        raise AnsibleFilterError("cron_to_oncalendar expects a cron expression string such as '0 2 * * *', got %s"
                                 % type(expression).__name__)
    if timezone is not None and not isinstance(timezone, str):
        raise AnsibleFilterError("cron_to_oncalendar: timezone must be a string such as 'UTC', got %s" % type(timezone).__name__)
    text = str(expression)
    try:
        values = to_oncalendar(text, str(timezone) if timezone else None)
    except BackupError as exc:
        raise AnsibleFilterError(str(exc)) from None
    if not single:
        return values
    if len(values) > 1:
        raise AnsibleFilterError("cron expression %r needs %d OnCalendar= values (day-of-month and "
                                 "day-of-week are both restricted, and cron runs when either matches); "
                                 "use the list (single=false) and write one OnCalendar= line per value" % (text, len(values)))
    return values[0]


class FilterModule(object):
    """seawall.pgbackup.cron_to_oncalendar"""

    def filters(self):
        return {'cron_to_oncalendar': cron_to_oncalendar}
