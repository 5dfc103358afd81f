# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durations of the modules' ``max_age`` options (``3600``, ``'30m'``, ``'20h'``, ``'1d12h'``, ``'1w'``).

The grammar lives in the engine, so modules, the host command and the configuration agree.
"""

from __future__ import annotations

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.duration import (INVALID_DURATION,
                                                                                              duration_seconds,
                                                                                              format_duration)

__all__ = ["INVALID_DURATION", "format_duration", "parse_duration"]


def parse_duration(value):
    """Seconds in ``value`` (an int, ``'3600'``, ``'20h'``, ``'1d12h'``); None when it is not a duration."""
    return duration_seconds(value)
