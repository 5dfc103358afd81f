# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durations as people write them: ``3600``, ``'30m'``, ``'20h'``, ``'1d12h'``, ``'1w'`` (a bare number is seconds)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Optional

from .errors import ConfigError

UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)\s*(sec|min|[smhdw])")  # sec and min: systemd's spelling (RandomizedDelaySec=)
INVALID_DURATION = "is not valid: use seconds or a duration such as 30m, 20h, 2d or 1w"


def duration_seconds(value: Any) -> Optional[int]:
    """Seconds in ``value``; None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    text = str(value).strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    if not text or _DURATION.sub("", text):
        return None
    return sum(int(number) * UNITS[unit] for number, unit in _DURATION.findall(text))


def parse_duration(key: str, value: Any) -> timedelta:
    """A timedelta, or a ConfigError naming the key and the wrong value."""
    seconds = duration_seconds(value)
    if seconds is None:
        raise ConfigError("%s=%r %s" % (key, value, INVALID_DURATION))
    return timedelta(seconds=seconds)


def format_duration(seconds: float) -> str:
    """``7500`` -> ``'2h5m'``; under a minute in seconds."""
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % max(seconds, 0)
    parts = []
    for unit in ("d", "h", "m"):
        count, seconds = divmod(seconds, UNITS[unit])
        if count:
            parts.append("%d%s" % (count, unit))
    return "".join(parts)
