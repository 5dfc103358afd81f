# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Five-field cron expressions: parsing and the longest gap between runs (for backup-age checks)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import List, Optional, Set

from .errors import ConfigError

_NAMES = {
    4: {n: i for i, n in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)},
    5: {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_FIELD = re.compile(r"[A-Za-z0-9*,/-]+")  # fullmatch: int() would also take "+3", "1_0" or non-ASCII digits
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _value(text: str, position: int) -> int:
    names = _NAMES.get(position + 1, {})
    if text.lower() in names:
        return names[text.lower()]
    return int(text)


def parse_field(text: str, position: int) -> Set[int]:
    low, high = _BOUNDS[position]
    values: Set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
            if step < 1:
                raise ValueError("step")
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, position), _value(b, position)
        else:
            start = _value(part, position)
            end = high if step > 1 else start
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ValueError("range")
        values.update(range(start, end + 1, step))
    if position == 4 and 7 in values:  # both 0 and 7 mean Sunday
        values.discard(7)
        values.add(0)
    return values


class Cron:
    def __init__(self, expression: str) -> None:
        fields = MACROS.get(expression.strip().lower(), expression).split()
        if len(fields) != 5:
            raise ConfigError("cron expression %r is not valid: use 5 fields (minute hour day month weekday) or one of "
                              "%s" % (expression, ", ".join(sorted(MACROS))))
        if not all(_FIELD.fullmatch(f) for f in fields):
            raise ConfigError("cron expression %r is not valid: only digits, names (jan, mon), '*', ',', '-' and '/' "
                              "are allowed in a field" % expression)
        try:
            self.sets: List[Set[int]] = [parse_field(f, i) for i, f in enumerate(fields)]
        except ValueError:
            raise ConfigError("cron expression %r is not valid: a field is out of range or malformed" % expression) from None
        self.expression = expression
        # As in Vixie cron and cronie: a day field starting with "*" (also "*/2") does not restrict.
        self.dom_any = fields[2].startswith("*")
        self.dow_any = fields[4].startswith("*")

    def matches(self, moment: datetime) -> bool:
        minute, hour, dom, month, dow = self.sets
        if moment.minute not in minute or moment.hour not in hour or moment.month not in month:
            return False
        weekday = (moment.weekday() + 1) % 7  # cron: Sunday is 0
        if self.dom_any or self.dow_any:  # cron's rule: both restricted means either may match
            return moment.day in dom and weekday in dow
        return moment.day in dom or weekday in dow

    def longest_gap(self, days: Optional[int] = None) -> timedelta:
        """The longest time between two runs: over ``days`` from a fixed start, by default eight years.

        Eight years from 2025 hold two leap days (a ``29 2`` schedule runs every four years) and every
        month-length and weekday effect, so quarterly, yearly and leap-day schedules get their real gap.
        Runs are enumerated a day at a time (days that match, then their hours and minutes), not
        minute by minute, so the long window stays cheap.
        """
        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        span = days if days is not None else (datetime(2033, 1, 1, tzinfo=timezone.utc) - start).days
        minute, hour = sorted(self.sets[0]), sorted(self.sets[1])
        times = [timedelta(hours=h, minutes=m) for h in hour for m in minute]  # sorted: hours, then minutes
        within = max((b - a for a, b in zip(times, times[1:])), default=timedelta(0))
        first: Optional[datetime] = None
        previous: Optional[datetime] = None
        longest = timedelta(0)
        for offset in range(span):
            day = start + timedelta(days=offset)
            if not self._day_matches(day):
                continue
            if previous is not None:
                longest = max(longest, day + times[0] - previous)
            else:
                first = day + times[0]
            previous = day + times[-1]
            longest = max(longest, within)
        if first is None:
            raise ConfigError("cron expression %r never fires within %d days" % (self.expression, span))
        if previous == first:  # one single run in the window: at least the whole window between runs
            return timedelta(days=span)
        return longest

    def fires_on(self, day: datetime) -> bool:
        """Whether the expression runs at some time of ``day``'s date (its month, day and weekday)."""
        return self._day_matches(day)

    def _day_matches(self, day: datetime) -> bool:
        _minute, _hour, dom, month, dow = self.sets
        if day.month not in month:
            return False
        weekday = (day.weekday() + 1) % 7
        if self.dom_any or self.dow_any:
            return day.day in dom and weekday in dow
        return day.day in dom or weekday in dow
