"""The cron_to_oncalendar filter, checked against real systemd (`systemd-analyze calendar`).

For each expression the union of the filter's OnCalendar= values must elapse at exactly the minutes the
engine's Cron.matches() accepts: the next ITERATIONS elapse times of every value are computed by
systemd-analyze from a fixed base time in UTC, merged, and compared with a walk of Cron.matches() from
the same base. Many values go into one systemd-analyze call to keep this fast.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import pytest

# seawall.pgbackup resolves from this checkout through the committed .collections symlink (ansible.cfg).
_COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.seawall.pgbackup.plugins.filter.cron_to_oncalendar import (  # noqa: E402
    FilterModule,
    cron_to_oncalendar,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.cron import Cron  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.cron import MACROS  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.oncalendar import parse  # noqa: E402

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or ("/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None)
BASE = datetime(2024, 2, 26, 13, 37, 30, tzinfo=timezone.utc)  # a Monday, three days before a leap day
ITERATIONS = 40
LAST_YEAR = 2199  # systemd computes no elapse after this year
RANDOM_SEED = 20240226
RANDOM_COUNT = 400

# Every cron expression in the docs, the strategy, the inventories and the engine's defaults.
DOCS = {
    "0 2 * * *": ["*-*-* 02:00:00"],
    "0 * * * *": ["*-*-* *:00:00"],
    "0 3 * * 1": ["Mon *-*-* 03:00:00"],
    "0 3 * * 0": ["Sun *-*-* 03:00:00"],
    "0 6 * * *": ["*-*-* 06:00:00"],
    "*/30 * * * *": ["*-*-* *:00,30:00"],
    "0 4 * * 0": ["Sun *-*-* 04:00:00"],
}
MORE = {
    "@hourly": ["*-*-* *:00:00"],
    "@daily": ["*-*-* 00:00:00"],
    "@midnight": ["*-*-* 00:00:00"],
    "@weekly": ["Sun *-*-* 00:00:00"],
    "@monthly": ["*-*-01 00:00:00"],
    "@yearly": ["*-01-01 00:00:00"],
    "@Annually": ["*-01-01 00:00:00"],
    "0 3 * * 7": ["Sun *-*-* 03:00:00"],
    "*/15 * * * *": ["*-*-* *:00,15,30,45:00"],
    "0 2 * * mon-fri": ["Mon..Fri *-*-* 02:00:00"],
    "30 1,13 * * *": ["*-*-* 01,13:30:00"],
    "0 0 13 * 5": ["*-*-13 00:00:00", "Fri *-*-* 00:00:00"],  # cron: the 13th OR any Friday
    "1-10/2 */6 1,15 JAN-mar,dec Mon-Fri": ["*-01..03,12-01,15 00,06,12,18:01,03,05,07,09:00", "Mon..Fri *-01..03,12-* 00,06,12,18:01,03,05,07,09:00"],
    "5/15 3 * * sat,sun,mon": ["Mon,Sat,Sun *-*-* 03:05,20,35,50:00"],
    "0 0 30 2 mon": ["Mon *-02-* 00:00:00"],  # February 30 never comes: only the Mondays remain
    "0 0 1-31 * 1": ["*-*-* 00:00:00"],  # cron ORs a full day-of-month with Monday: every day
    "0 0 * * 0-7": ["*-*-* 00:00:00"],
    "0 0 29 2 *": ["*-02-29 00:00:00"],
    "59 23 31 * *": ["*-*-31 23:59:00"],
    "* * * * *": ["*-*-* *:*:00"],
    # systemd 252 evaluates "00/7:41" wrongly after a change of month (no 00:41 on the 1st): lists are safe
    "41 */7 * * *": ["*-*-* 00,07,14,21:41:00"],
}


class Calendar(NamedTuple):
    normalized: str
    elapses: List[datetime]


def systemd_calendar(specs: Sequence[str]) -> Dict[str, Calendar]:
    """systemd-analyze's normalized form and next ITERATIONS elapse times (UTC) for each OnCalendar value."""
    unique = list(dict.fromkeys(specs))
    results: Dict[str, Calendar] = {}
    env = dict(os.environ, TZ="UTC", LC_ALL="C", SYSTEMD_COLORS="0", SYSTEMD_PAGER="")
    for start in range(0, len(unique), 250):
        chunk = unique[start:start + 250]
        proc = subprocess.run(
            [SYSTEMD_ANALYZE, "calendar", "--iterations=%d" % ITERATIONS, "--base-time=@%d" % BASE.timestamp(), *chunk],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, "systemd-analyze rejected a value: %s" % proc.stderr.strip()
        blocks = [b for b in proc.stdout.split("\n\n") if b.strip()]
        assert len(blocks) == len(chunk), proc.stdout
        for spec, block in zip(chunk, blocks):
            normalized, elapses = None, []
            for line in block.splitlines():
                label, _sep, value = line.strip().partition(": ")
                if label == "Normalized form":
                    normalized = value
                elif (label == "Next elapse" or label.startswith("Iter. #")) and value != "never":
                    assert value.endswith(" UTC"), line
                    elapses.append(datetime.strptime(value[:-4], "%a %Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc))
            assert normalized is not None, block
            results[spec] = Calendar(normalized, elapses)
    return results


def cron_elapses(cron: Cron, zone: tzinfo = timezone.utc) -> List[datetime]:
    """The first ITERATIONS minutes after BASE (as UTC) that Cron.matches() accepts in time zone ``zone``.

    Walks day by day: whether a day qualifies does not depend on the time, so one probe decides it, then
    every hour x minute of a qualifying day is checked with matches() too.
    """
    minutes, hours = sorted(cron.sets[0]), sorted(cron.sets[1])
    base = BASE.astimezone(zone)
    found: List[datetime] = []
    day = base.date()
    while len(found) < ITERATIONS and day.year <= LAST_YEAR:
        if cron.matches(datetime(day.year, day.month, day.day, hours[0], minutes[0], tzinfo=zone)):
            for hour in hours:
                for minute in minutes:
                    moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                    if moment > base:
                        assert cron.matches(moment)
                        found.append(moment.astimezone(timezone.utc))
        day += timedelta(days=1)
    return found[:ITERATIONS]


def union(calendars: Dict[str, Calendar], specs: Sequence[str]) -> List[datetime]:
    return sorted(set(t for spec in specs for t in calendars[spec].elapses))[:ITERATIONS]


needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")


def _fmt(times: Sequence[datetime]) -> List[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in times]


def assert_equivalent(expressions: Sequence[str], zone_name: Optional[str] = None) -> int:
    """Each expression's OnCalendar values are systemd-normal and elapse when cron runs; returns the count checked."""
    zone: tzinfo = timezone.utc
    if zone_name:
        from zoneinfo import ZoneInfo
        zone = ZoneInfo(zone_name)
    converted = {e: cron_to_oncalendar(e, timezone=zone_name or "") for e in expressions}
    calendars = systemd_calendar([s for specs in converted.values() for s in specs])
    for expression, specs in converted.items():
        for spec in specs:
            assert calendars[spec].normalized == spec, "%r: systemd normalizes %r to %r" % (expression, spec, calendars[spec].normalized)
            assert calendars[spec].elapses, "%r: %r never elapses" % (expression, spec)
        expected = cron_elapses(parse(expression), zone)
        got = union(calendars, specs)
        assert _fmt(got) == _fmt(expected), "%r -> %r differs from cron" % (expression, specs)
    return len(converted)


# ---------------------------------------------------------------- exact values


@pytest.mark.parametrize("expression,expected", list(DOCS.items()) + list(MORE.items()))
def test_values(expression, expected):
    assert cron_to_oncalendar(expression) == expected


def test_macros_are_their_five_field_forms():
    for macro, fields in MACROS.items():
        assert cron_to_oncalendar(macro) == cron_to_oncalendar(fields)


def test_timezone_suffix():
    assert cron_to_oncalendar("0 2 * * *", timezone="UTC") == ["*-*-* 02:00:00 UTC"]
    assert cron_to_oncalendar("0 0 13 * 5", timezone="Europe/Berlin") == ["*-*-13 00:00:00 Europe/Berlin", "Fri *-*-* 00:00:00 Europe/Berlin"]
    assert cron_to_oncalendar("0 2 * * *", timezone="") == ["*-*-* 02:00:00"]
    assert cron_to_oncalendar("0 2 * * *", timezone=None) == ["*-*-* 02:00:00"]


def test_single():
    assert cron_to_oncalendar("*/30 * * * *", timezone="UTC", single=True) == "*-*-* *:00,30:00 UTC"
    with pytest.raises(AnsibleFilterError, match=r"'0 0 13 \* 5' needs 2 OnCalendar= values"):
        cron_to_oncalendar("0 0 13 * 5", single=True)


def test_registered_under_its_name():
    assert FilterModule().filters()["cron_to_oncalendar"] is cron_to_oncalendar


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("expression,reason", [
    ("", "use 5 fields"),
    ("* * * *", "use 5 fields"),
    ("0 2 * * * *", "use 5 fields"),
    ("61 * * * *", "out of range or malformed"),
    ("0 24 * * *", "out of range or malformed"),
    ("0 0 0 * *", "out of range or malformed"),
    ("0 0 32 * *", "out of range or malformed"),
    ("0 0 * 13 *", "out of range or malformed"),
    ("0 0 * * 8", "out of range or malformed"),
    ("*/0 * * * *", "out of range or malformed"),
    ("5-1 * * * *", "out of range or malformed"),
    ("0 0 * * fri-mon", "out of range or malformed"),
    ("0 0 * * funday", "out of range or malformed"),
    ("0 0 1 foo *", "out of range or malformed"),
    ("0 0 L * *", "out of range or malformed"),
    ("0 0 ? * 1", "only digits, names"),
    ("0 0 +3 * *", "only digits, names"),
    ("0 0 1_0 * *", "only digits, names"),
    ("0 0 \u0663 * *", "only digits, names"),  # an Arabic-Indic digit, which int() would accept
    ("@fortnightly", "or one of @annually"),
    ("0 2 * * *\n0 3 * * *", "use 5 fields"),
])
def test_invalid_expression_fails_in_one_line(expression, reason):
    with pytest.raises(AnsibleFilterError) as info:
        cron_to_oncalendar(expression)
    message = str(info.value)
    assert "\n" not in message
    assert ("cron expression %r is not valid" % expression) in message
    assert reason in message


@pytest.mark.parametrize("expression,reason", [
    ("@reboot", "@reboot is not a calendar event (use OnBootSec="),
    ("0 0 30 2 *", "never fires: no month in 02 has day 30"),
    ("0 0 31 4,6,9,11 *", "never fires: no month in 04,06,09,11 has day 31"),
    ("0 0 30,31 feb *", "never fires: no month in 02 has day 30,31"),
])
def test_not_expressible(expression, reason):
    with pytest.raises(AnsibleFilterError) as info:
        cron_to_oncalendar(expression)
    message = str(info.value)
    assert "\n" not in message and ("cron expression %r" % expression) in message and reason in message


def test_never_firing_agrees_with_engine():
    cron = parse("0 0 31 4,6,9,11 *")
    assert cron_elapses(cron) == []


@pytest.mark.parametrize("value", [None, 2, ["0 2 * * *"]])
def test_not_a_string(value):
    with pytest.raises(AnsibleFilterError, match="expects a cron expression string"):
        cron_to_oncalendar(value)


@pytest.mark.parametrize("zone", ["Europe/Berlin Extra", "../etc/passwd", "/UTC", "UTC\n", 3])
def test_bad_timezone(zone):
    with pytest.raises(AnsibleFilterError, match="time ?zone"):
        cron_to_oncalendar("0 2 * * *", timezone=zone)


# ---------------------------------------------------------------- equivalence with systemd


@needs_systemd
def test_docs_expressions_match_systemd():
    assert assert_equivalent(list(DOCS) + list(MORE)) == len(DOCS) + len(MORE)


@needs_systemd
def test_timezones_match_systemd():
    assert_equivalent(list(DOCS) + ["0 0 13 * 5", "30 23 * * sat"], zone_name="UTC")
    assert_equivalent(list(DOCS) + ["0 0 13 * 5", "30 23 * * sat", "15 0-2 1 * *"], zone_name="Asia/Tokyo")  # +09:00, no DST


_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_NAMES = {3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
          4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}


def _random_part(rng: random.Random, position: int) -> str:
    low, high = _BOUNDS[position]

    def value(a: int = low, b: int = high) -> str:
        number = rng.randint(a, b)
        names = _NAMES.get(position)
        if names and rng.random() < 0.3 and number - (1 if position == 3 else 0) < len(names):
            name = names[number - (1 if position == 3 else 0)]
            return name.upper() if rng.random() < 0.2 else name
        return str(number)

    kind = rng.choice(["value", "value", "range", "range-step", "star-step", "value-step"])
    if kind == "value":
        return value()
    if kind == "star-step":
        return "*/%d" % rng.randint(1, max(1, (high - low) // 2))
    if kind == "value-step":
        return "%d/%d" % (rng.randint(low, high), rng.randint(1, max(1, (high - low) // 2)))
    start = rng.randint(low, high)
    end = rng.randint(start, high)
    text = "%s-%s" % (value(start, start), value(end, end))
    if kind == "range-step":
        text += "/%d" % rng.randint(1, max(1, end - start + 1))
    return text


def _random_expression(rng: random.Random) -> str:
    fields = []
    for position, star in enumerate([0.15, 0.3, 0.55, 0.6, 0.55]):
        if rng.random() < star:
            fields.append("*")
        else:
            fields.append(",".join(_random_part(rng, position) for _i in range(rng.choice([1, 1, 1, 2, 3]))))
    return " ".join(fields)


@needs_systemd
def test_random_expressions_match_systemd():
    rng = random.Random(RANDOM_SEED)
    expressions, never = [], []
    while len(expressions) < RANDOM_COUNT:
        expression = _random_expression(rng)
        try:
            cron_to_oncalendar(expression)
        except AnsibleFilterError as exc:
            assert "never fires" in str(exc), str(exc)
            assert cron_elapses(parse(expression)) == [], expression  # the engine agrees it never runs
            never.append(expression)
            continue
        expressions.append(expression)
    both_days = [e for e in expressions if len(cron_to_oncalendar(e)) == 2]
    assert len(both_days) >= RANDOM_COUNT // 10, "the generator should exercise cron's day-of-month OR day-of-week rule"
    assert assert_equivalent(expressions) == len(set(expressions))


@needs_systemd
def test_systemd_base_time_is_honoured():
    """Guards the harness itself: a daily value's first elapse is the next 02:00 after BASE."""
    calendars = systemd_calendar(["*-*-* 02:00:00"])
    assert calendars["*-*-* 02:00:00"].elapses[0] == datetime.combine(date(2024, 2, 27), datetime.min.time(), timezone.utc) + timedelta(hours=2)
