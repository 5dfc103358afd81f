# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m seawall_pgbackup.cli.run``: the command without its console script (restore_command on a host where
only the package is importable). Not the package's ``__main__``: Galaxy refuses a module_utils named so."""

from __future__ import annotations

import sys

from ..core.walspool import fast

if __name__ == "__main__":
    # restore_command without the installed command: a prefetched WAL file is served before the CLI is imported
    SERVED = fast(sys.argv[1:])
    if SERVED is not None:
        raise SystemExit(SERVED)
    from .main import main  # pylint: disable=import-outside-toplevel

    raise SystemExit(main())
