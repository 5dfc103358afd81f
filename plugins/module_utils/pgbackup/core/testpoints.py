# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named pause points, so crash tests can kill a run at a chosen step (inert unless asked for).

``SEAWALL_TEST_PAUSE=<step>[,<step>...]`` makes ``pause(step)`` write ``<step>`` to the file named by
``SEAWALL_TEST_PAUSE_FILE`` (when set) and sleep ``SEAWALL_TEST_PAUSE_SECONDS`` (default 30): long
enough for a test to send SIGKILL at exactly that point. Without the variable nothing happens.
"""

from __future__ import annotations

import os
import time


def pause(step: str) -> None:
    wanted = os.environ.get("SEAWALL_TEST_PAUSE")
    if not wanted or step not in wanted.split(","):
        return
    marker = os.environ.get("SEAWALL_TEST_PAUSE_FILE")
    if marker:
        with open(marker, "a", encoding="utf-8") as handle:
            handle.write(step + "\n")
    time.sleep(float(os.environ.get("SEAWALL_TEST_PAUSE_SECONDS", "30")))
