"""Cron parsing and the longest gap between runs, which sets backup-age thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from seawall_pgbackup.core.cron import Cron
from seawall_pgbackup.core.errors import ConfigError


@pytest.mark.parametrize("expression,gap", [
    ("0 2 * * *", timedelta(days=1)), ("0 * * * *", timedelta(hours=1)), ("0 3 * * 1", timedelta(days=7)),
    ("0 3 * * 0", timedelta(days=7)), ("0 3 * * 7", timedelta(days=7)), ("*/15 * * * *", timedelta(minutes=15)),
    ("0 0 1 * *", timedelta(days=31)), ("0 2 * * mon-fri", timedelta(days=3)), ("30 1,13 * * *", timedelta(hours=12)),
])
def test_longest_gap(expression, gap):
    assert Cron(expression).longest_gap() == gap


def test_day_of_month_or_weekday_rule():
    cron = Cron("0 0 13 * 5")  # the 13th OR any Friday, as cron defines it
    assert cron.matches(datetime(2026, 11, 13, 0, 0, tzinfo=timezone.utc))
    assert cron.matches(datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc))  # a Friday
    assert not cron.matches(datetime(2026, 11, 19, 0, 0, tzinfo=timezone.utc))


@pytest.mark.parametrize("expression", ["", "* * * *", "61 * * * *", "0 0 32 * *", "0 0 * 13 *", "*/0 * * * *",
                                        "0 0 30 2 *"])
def test_invalid_or_never_firing(expression):
    with pytest.raises(ConfigError):
        Cron(expression).longest_gap()


def test_a_stepped_star_does_not_restrict_the_day_as_in_vixie_cron():
    cron = Cron("0 0 */2 * mon")  # "*/2" starts with "*": only Mondays on odd days, like cronie
    assert cron.matches(datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc))  # Monday the 23rd
    assert not cron.matches(datetime(2026, 11, 16, 0, 0, tzinfo=timezone.utc))  # Monday the 16th
    assert not cron.matches(datetime(2026, 11, 25, 0, 0, tzinfo=timezone.utc))  # Wednesday the 25th


@pytest.mark.parametrize("macro,gap", [("@hourly", timedelta(hours=1)), ("@daily", timedelta(days=1)),
                                       ("@weekly", timedelta(days=7)), ("@monthly", timedelta(days=31))])
def test_macros(macro, gap):
    assert Cron(macro).longest_gap() == gap
