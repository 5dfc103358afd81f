# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way every front end (CLI, Ansible module, timer) runs an engine operation.

``perform`` wraps the operation in the run hook (observe/runhook): run record, metrics, notifications
and dead-man's-switch pings, so a backup taken by an AWX job is monitored exactly like a timer's.
Check mode runs no operation and so goes through no hook.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..config.settings import Config
from ..observe.runhook import monitored


def perform(cfg: Config, command: str, kind: Optional[str], action: Callable[[], Any],
            report: Optional[Callable[[], Optional[Dict[str, Any]]]] = None,
            exit_code: Optional[Callable[[Any], int]] = None) -> Any:
    """Run ``action()`` as the engine command ``command`` (create, cleanup, verify, drill, health, ...).

    Returns what ``action`` returns; a BackupError passes through after it was recorded.
    ``exit_code(result)``: the run's status for the record when ``action`` does not return an int.
    """
    return monitored(cfg, command, kind, action, report=report, exit_code=exit_code)
