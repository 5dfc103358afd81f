# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Five-field cron expressions as systemd ``OnCalendar=`` values.

``to_oncalendar(expression)`` returns a list of one or two OnCalendar values whose union fires exactly
when cron would (the cron side is :class:`.cron.Cron`, so both agree with the engine's health checks):

* one value when day-of-month or day-of-week is ``*``: ``[Weekdays ]*-Months-Days Hours:Minutes:00``;
* two values when both are restricted, because cron then runs when EITHER matches and systemd ANDs the
  weekday with the date: ``*-Months-Days HH:MM:00`` and ``Weekdays *-Months-* HH:MM:00``
  (a timer with several ``OnCalendar=`` lines elapses at the union of them).

A value that can never elapse (such as ``*-02-30``) is dropped; if nothing is left the expression never
fires and is rejected, like ``@reboot``, which is not a calendar event.  Values are written in systemd's
normalized form (two-digit fields, lists, ``a..b`` ranges, ``Mon..Fri``; no ``/step`` repetitions,
which some systemd versions evaluate wrongly).
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Set

from .cron import Cron
from .errors import ConfigError

_WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]  # systemd's order
_MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # February 29 exists in leap years
_TIMEZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")


class NotExpressible(ConfigError):
    """A valid cron expression without a systemd calendar equivalent (``@reboot``, never-firing dates)."""


def parse(expression: str) -> Cron:
    """The engine's :class:`Cron` for an expression or macro; ConfigError (one line) when invalid."""
    if expression.strip().lower() == "@reboot":
        raise NotExpressible("cron expression %r cannot be converted to OnCalendar=: @reboot is not a calendar event "
                             "(use OnBootSec= in the timer instead)" % expression)
    return Cron(expression)  # ConfigError naming the expression when a field is malformed or out of range


def _component(values: Iterable[int], low: int, high: int) -> str:
    """A numeric calendar component in systemd's normalized syntax: ``*``, ``05``, ``00,30``, ``01..05,10``.

    Deliberately no ``start/step`` repetitions: systemd 252 skips the first value of an open-ended
    hour repetition after a change of month (``*-*-* 00/7:41`` never elapses at 00:41 on the 1st), and other
    versions have had similar repetition bugs (systemd issues #22665, #40260). Explicit values are safe.
    """
    vals = sorted(set(values))
    if vals == list(range(low, high + 1)):
        return "*"
    return ",".join("%02d..%02d" % (run[0], run[-1]) if len(run) >= 3 else ",".join("%02d" % v for v in run)
                    for run in _runs(vals))


def _runs(vals: List[int]) -> List[List[int]]:
    runs: List[List[int]] = []
    for value in vals:
        if runs and runs[-1][-1] == value - 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


def _weekdays(cron_days: Set[int]) -> str:
    """Cron weekdays (0 = Sunday) as systemd names in Monday-first order: Mon..Fri, Sat,Sun."""
    indexes = sorted((d + 6) % 7 for d in cron_days)
    return ",".join("%s..%s" % (_WEEKDAYS[run[0]], _WEEKDAYS[run[-1]]) if len(run) >= 3
                    else ",".join(_WEEKDAYS[i] for i in run) for run in _runs(indexes))


def _date_exists(days: Set[int], months: Set[int]) -> bool:
    return any(day <= _MONTH_DAYS[month - 1] for day in days for month in months)


def to_oncalendar(expression: str, timezone: Optional[str] = None) -> List[str]:
    """OnCalendar= values (1 or 2) whose union fires when cron runs ``expression``; ConfigError otherwise."""
    cron = parse(expression)
    minutes, hours, days, months, weekdays = cron.sets
    suffix = ""
    if timezone:
        if not _TIMEZONE.fullmatch(timezone):
            raise ConfigError("time zone %r is not valid: use a tz database name such as UTC or Europe/Berlin" % timezone)
        suffix = " " + timezone
    time = "%s:%s:00" % (_component(hours, 0, 23), _component(minutes, 0, 59))
    month = _component(months, 1, 12)
    all_days, all_weekdays = set(range(1, 32)), set(range(7))

    def line(day_set: Set[int], weekday_set: Set[int]) -> str:
        prefix = "" if weekday_set == all_weekdays else _weekdays(weekday_set) + " "
        return "%s*-%s-%s %s%s" % (prefix, month, _component(day_set, 1, 31), time, suffix)

    if cron.dom_any or cron.dow_any:  # one side is "*": cron ANDs them, like systemd
        candidates = [(days, weekdays)]
    elif days == all_days or weekdays == all_weekdays:  # cron ORs them, and one side matches every day
        candidates = [(all_days, all_weekdays)]
    else:  # cron's OR rule: one line per side, systemd fires at their union
        candidates = [(days, all_weekdays), (all_days, weekdays)]
    result = [line(d, w) for d, w in candidates if _date_exists(d, months)]
    if not result:
        raise NotExpressible("cron expression %r never fires: no month in %s has day %s, so a systemd timer would "
                             "never elapse" % (expression, month, _component(days, 1, 31)))
    return result
