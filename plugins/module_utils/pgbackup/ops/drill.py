# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disaster-recovery drill: restore the newest good full backup for real, check it, time it.

The report (JSON, under ``BACKUP_DIR/logs/``) says which backup, where, whether it restored
intact and how long the restore took: the recovery time objective measured, not guessed.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import iso, utc_now
from ..core.errors import BackupError, VerifyError
from ..model.drillreport import write_report
from ..repo.catalog import Repository
from .verify import verify_and_record


def run_drill(cfg: Config, server_url: Optional[str] = None, probes: Sequence[str] = (),
              with_globals: Optional[bool] = None) -> Dict[str, Any]:
    """Run the drill; the report is written whatever the outcome, and a failed drill raises afterwards."""
    source = DbTarget(cfg.require_database_url())
    server = DbTarget(server_url) if server_url else source
    if server_url:
        server.borrow_password(source)
    if with_globals is None:
        # Another cluster lacks the roles the objects belong to; the source's own cluster has them.
        with_globals = server.hostinfo != source.hostinfo
    repo = Repository(cfg.backup_dir)
    backup = repo.find("latest", kind="full", database=source.dbname)
    started = utc_now()
    try:
        result = verify_and_record(cfg, backup.id, level="restore", server=server, probes=probes,
                                   with_globals=with_globals)[0]
    except BackupError as exc:  # the drill could not run: that is a failed drill too, and it is reported
        result = {"ok": False, "details": "%s (step %s)" % (exc, exc.step),
                  "duration_seconds": round((utc_now() - started).total_seconds(), 3)}
    report = {
        "kind": "dr-drill",
        "backup_id": backup.id,
        "database": backup.database,
        "backup_created_at": iso(backup.created_at),
        "server": server.hostinfo,
        "started_at": iso(started),
        "finished_at": iso(utc_now()),
        "ok": result["ok"],
        "rto_seconds": result.get("rto_seconds"),
        "duration_seconds": result["duration_seconds"],
        "details": result["details"],
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    write_report(repo.log_dir, report, stamp)
    server.close()
    source.close()
    if not report["ok"]:
        raise VerifyError("DR drill failed: %s" % report["details"])
    return report
