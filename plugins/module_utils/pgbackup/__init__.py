# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""seawall.pgbackup engine: plain Python, standard library first, no Ansible imports.

The same package is bundled into Ansible modules and installed on hosts as the
``seawall-pgbackup`` command, so scheduled runs and playbook runs share one code path.
"""

from __future__ import annotations

__version__ = "0.1.0"
# The oldest Python the engine runs on (pyproject.toml requires-python, tests/config.yml): modules and the command
# refuse older ones in one line instead of failing somewhere inside.
MINIMUM_PYTHON = (3, 9)
