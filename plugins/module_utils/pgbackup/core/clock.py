# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time in one shape: aware UTC datetimes and the ISO strings records carry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

from .errors import NotFound

# How far ahead of this host's clock a backup may be dated and still count as "now" (clocks of the
# database host, an NTP step, a restored VM). Anything later is clock skew: flagged by health, never
# chosen as latest, never fresh, never counted by retention.
FUTURE_TOLERANCE = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def is_future(moment: datetime, now: Optional[datetime] = None) -> bool:
    """Whether ``moment`` lies more than FUTURE_TOLERANCE after ``now`` (default: this host's clock)."""
    return moment > (now or utc_now()) + FUTURE_TOLERANCE


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def parse_moment(text: str, tz_name: str = "UTC") -> datetime:
    """ISO 8601 (``2026-11-24T13:00:00Z``, ``2026-11-24 13:00``); a time without offset is in ``tz_name``."""
    cleaned = text.strip().replace(" ", "T", 1)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise NotFound("time %r is not valid: use ISO 8601 such as 2026-11-24T13:00:00Z or '2026-11-24 13:00'"
                       % text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz_name))
    return moment


def zone(tz_name: str):
    """A tzinfo for an IANA name (UTC needs no tz database, so it works everywhere)."""
    if tz_name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo  # pylint: disable=import-outside-toplevel
        return ZoneInfo(tz_name)
    except Exception:  # pylint: disable=broad-except
        raise NotFound("time zone %r is not valid: use an IANA name such as UTC or Europe/Berlin" % tz_name) from None
