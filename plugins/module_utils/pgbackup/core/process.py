# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a run named in a leftover (a passfile, a scratch directory or database) is still alive."""

from __future__ import annotations

import errno
import os


def alive(pid: int) -> bool:
    """True while process ``pid`` exists (another user's too: only "no such process" means it is gone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True
