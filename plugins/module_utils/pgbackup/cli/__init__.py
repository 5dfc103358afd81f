# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seawall-pgbackup host command."""

from ..core.walspool import at_entry

# The installed command imports this package first: a WAL file the prefetcher spooled is moved into place and the
# process exits here, before the engine is loaded (restore_command runs once per file; core/walspool.py).
at_entry()
