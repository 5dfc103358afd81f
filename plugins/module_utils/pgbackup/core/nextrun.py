# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""When a cron expression fires next (and last fired) in a time zone, with systemd's timer semantics.

The foreground scheduler (``schedule``) and the systemd timers (core/oncalendar.py) must run a job at the
same moments. Both match wall-clock times of the zone with :class:`.cron.Cron`'s rules (day-of-month OR
day-of-week when both are restricted). Daylight saving time, as systemd's calendar timers handle it:

* a wall time that does not exist (the hour skipped in spring) does not fire that day (systemd issue #5595;
  cron would run it late, systemd does not);
* a wall time that exists twice (the hour repeated in autumn) fires once, at its first occurrence; from a moment
  inside the second pass of that hour, the rest of that pass comes next (systemd keeps the DST flag of the time
  it computes from).

Pure functions over aware datetimes, returning UTC: the scheduler passes its clock in, the tests a fake one.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Callable, Iterator, List, Optional

from .cron import Cron

HORIZON_DAYS = 28 * 366  # the Gregorian weekday/leap-day cycle: "0 0 29 2 mon" style dates repeat within it


def _times(cron: Cron) -> List[time]:
    return [time(h, m) for h in sorted(cron.sets[1]) for m in sorted(cron.sets[0])]


def resolve(wall: datetime, zone: tzinfo, fold: int = 0) -> Optional[datetime]:
    """The moment (in UTC) a naive wall time of ``zone`` names, None when it does not exist; ``fold=1``: the second
    occurrence of a repeated wall time.

    UTC, because Python never finds an aware time in a repeated hour equal to the same moment in another zone.
    """
    moment = wall.replace(tzinfo=zone, fold=fold).astimezone(timezone.utc)
    return moment if moment.astimezone(zone).replace(tzinfo=None) == wall else None


def _fold_for(moment: datetime, zone: tzinfo) -> Callable[[datetime], int]:
    """Which occurrence a candidate wall time takes: the first, except in the repeated hour's second pass when the
    reference moment is in it too (systemd then keeps the reference's DST flag: the hour goes on, it is not
    repeated a third time; found with ``systemd-analyze calendar --base-time``)."""
    local = moment.astimezone(zone)
    if not local.fold:
        return lambda wall: 0
    hour = local.replace(tzinfo=None, minute=0, second=0, microsecond=0)
    return lambda wall: 1 if wall.replace(minute=0) == hour else 0


def _wall_days(start: datetime, step: int) -> Iterator[datetime]:
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(HORIZON_DAYS):
        yield first + timedelta(days=offset * step)


def next_run(cron: Cron, after: datetime, zone: tzinfo) -> Optional[datetime]:
    """The first moment strictly after ``after`` (aware) at which ``cron`` fires in ``zone``; None if never."""
    times = _times(cron)
    local = after.astimezone(zone).replace(tzinfo=None)
    fold = _fold_for(after, zone)
    for day in _wall_days(local - timedelta(days=1), 1):  # from the day before: the repeated hour crosses dates
        if not cron.fires_on(day):
            continue
        for clock in times:
            wall = datetime.combine(day.date(), clock)
            moment = resolve(wall, zone, fold(wall))
            if moment is not None and moment > after:
                return moment
    return None


def previous_run(cron: Cron, before: datetime, zone: tzinfo) -> Optional[datetime]:
    """The last moment at or before ``before`` at which ``cron`` fired in ``zone``; None if never. Repeated wall
    times count at their first occurrence (what a run planned before the repeated hour takes)."""
    times = list(reversed(_times(cron)))
    local = before.astimezone(zone).replace(tzinfo=None)
    for day in _wall_days(local + timedelta(days=1), -1):
        if not cron.fires_on(day):
            continue
        for clock in times:
            moment = resolve(datetime.combine(day.date(), clock), zone)
            if moment is not None and moment <= before:
                return moment
    return None


def catch_up(cron: Cron, zone: tzinfo, last_run: Optional[datetime], now: datetime) -> Optional[datetime]:
    """The missed run to make up at start, like a timer's ``Persistent=true``: the newest time the job should
    have run since ``last_run`` (its last start), else None. Only one, however many were missed; none when the
    job never ran (systemd has no stamp then either) or its last run is in the future (a clock set back)."""
    if last_run is None or last_run > now:
        return None
    missed = previous_run(cron, now, zone)
    if missed is None or missed <= last_run:
        return None
    return missed
