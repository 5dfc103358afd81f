# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``seawall-pgbackup``: the host command that timers, scheduled tasks and people run.

Subcommands mirror the users' npm scripts: create, list, restore, verify, health.
Exit 0 on success; otherwise one line ``seawall-pgbackup: error: ...`` and the error kind's exit
code (docs/errors.md: 3 and above, 70 for a bug, 75 for a held lock, 130 when interrupted; 2 for a usage error).
health's own results are the Nagios codes 0/1/2.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import traceback
from typing import Any, Dict, List, Optional

from .. import MINIMUM_PYTHON, __version__
from ..config.connection import DbTarget
from ..config.settings import BACKUP_KINDS, load_config
from ..core.errors import INTERRUPTED_EXIT_CODE, BackupError, ConfigError, InternalError, VerifyError, render
from ..core.walspool import SPOOL, fast, trace
from ..core.walspool import stop as stop_prefetch
from ..repo.catalog import open_repository
from .encryption import ENCRYPTION_COMMANDS, add_encryption_commands

KINDS = BACKUP_KINDS  # what --type selects

PROG = "seawall-pgbackup"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given before or after the command, an option is never reset by the other parser.
    common.add_argument("--config", default=argparse.SUPPRESS, help="JSON configuration file (default: $BACKUP_CONFIG)")
    common.add_argument("--backup-dir", default=argparse.SUPPRESS,
                        help="backup directory (default: $BACKUP_DIR or ./backups)")
    common.add_argument("--pg-bin-dir", default=argparse.SUPPRESS,
                        help="directory of the PostgreSQL client tools to use")
    common.add_argument("--accept-unsigned", action="store_true", default=argparse.SUPPRESS,
                        help="also trust manifests without a signature (older versions'), to migrate them with rekey")
    common.add_argument("--accept-unencrypted", action="store_true", default=argparse.SUPPRESS,
                        help="also trust backups not encrypted under a configured key although encryption is on")
    parser = argparse.ArgumentParser(prog=PROG, description="PostgreSQL backups you can trust.", parents=[common])
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])  # type: ignore[method-assign]

    create = sub.add_parser("create", help="take a backup")
    create.add_argument("--type", dest="kind", help="full, schema, data, globals, base (physical: pg_basebackup "
                                                    "of the whole cluster) or incremental (PostgreSQL 17+: since the "
                                                    "newest base or incremental) (default: $BACKUP_TYPE or full)")
    create.add_argument("--compression", help="gzip, zstd or none (default: $BACKUP_COMPRESSION or gzip)")
    create.add_argument("--json", action="store_true", help="print the manifest as JSON")
    create.add_argument("--dry-run", action="store_true", help="check what the backup needs (repository, "
                        "connection, login, privileges, client tools) and take nothing")

    listing = sub.add_parser("list", help="list good backups, oldest first")
    listing.add_argument("--type", dest="kind", choices=KINDS)
    listing.add_argument("--all", dest="include_bad", action="store_true",
                         help="also backups marked bad or unfinished and manifests that are not valid, with why")
    listing.add_argument("--database")
    listing.add_argument("--json", action="store_true")
    _destination_option(listing)

    restore = sub.add_parser("restore", help="restore a backup into a database")
    restore.add_argument("backup", nargs="?", default="latest",
                         help="a backup id, a manifest or data file path, or 'latest' (the default)")
    restore.add_argument("--before", metavar="TIME", help="with 'latest': the newest backup started before TIME "
                                                          "(ISO 8601; without an offset, in BACKUP_TIMEZONE)")
    restore.add_argument("--table", action="append", default=[], metavar="SCHEMA.TABLE",
                         help="partial restore: only these tables' rows, with the definitions of every table but no "
                              "indexes or keys (repeatable); into a temporary database unless --target-url is given")
    restore.add_argument("--schema", action="append", default=[], help="partial restore: every table of a schema")
    restore.add_argument("--target-url", help="database to restore into (default: $DATABASE_URL); "
                                              "prefer a passfile to a password in this URL")
    restore.add_argument("--type", dest="kind", choices=KINDS, help="kind for 'latest' (default full)")
    restore.add_argument("--clean", action="store_true", help="replace a target that already holds objects")
    restore.add_argument("--pgdata", metavar="DIR",
                         help="rebuild a data directory from a base backup (--type base for 'latest'): DIR absent or "
                              "empty, never overwritten; without a --target-* no recovery settings are written (the "
                              "backup holds its WAL)")
    targets = restore.add_mutually_exclusive_group()
    targets.add_argument("--target-time", metavar="TIME",
                         help="with --pgdata: recover to TIME (ISO 8601; without an offset, in BACKUP_TIMEZONE) from "
                              "the newest base or chain that ended before it, replaying the WAL archive")
    targets.add_argument("--target-lsn", metavar="LSN", help="with --pgdata: recover to this WAL location")
    targets.add_argument("--target-xid", metavar="XID", help="with --pgdata: recover to the end of this transaction")
    targets.add_argument("--target-name", metavar="NAME",
                         help="with --pgdata: recover to this restore point (pg_create_restore_point)")
    targets.add_argument("--target-immediate", action="store_true",
                         help="with --pgdata: recover to the end of the backup, then promote")
    targets.add_argument("--target-latest", action="store_true",
                         help="with --pgdata: recover to the end of the WAL archive")
    restore.add_argument("--keep-going", action="store_true",
                         help="restore what can be restored when some objects fail (a cross-version restore); "
                              "exits 13 naming the objects that failed")
    _with_globals_option(restore)
    restore.add_argument("--jobs", type=int, help="parallel pg_restore jobs")
    restore.add_argument("--json", action="store_true")
    _destination_option(restore)

    verify = sub.add_parser("verify", help="check checksums and read archives back")
    verify.add_argument("backup", nargs="?", help="backup id, path or 'latest' (default: every good backup)")
    verify.add_argument("--level", choices=("checksum", "archive", "restore"),
                        help="default archive; restore: also restore into a scratch database and compare row counts")
    verify.add_argument("--type", dest="kind", choices=KINDS)
    _restore_check_options(verify)
    verify.add_argument("--wal", action="store_true",
                        help="verify the WAL archive instead: continuity (gaps, timeline switches), records, data")
    verify.add_argument("--json", action="store_true")
    _destination_option(verify)

    drill = sub.add_parser("drill", help="DR drill: restore the newest full backup, check it, time it")
    _restore_check_options(drill)
    drill.add_argument("--json", action="store_true")

    cleanup = sub.add_parser("cleanup", help="apply the retention policy: delete expired backups and old leftovers")
    cleanup.add_argument("--dry-run", action="store_true", help="print the plan; delete nothing")
    cleanup.add_argument("--timezone", help="time zone of the retention slots (default: $BACKUP_TIMEZONE or UTC)")
    cleanup.add_argument("--leftover-grace", help="remove files of interrupted runs older than this (default: 6h)")
    cleanup.add_argument("--json", action="store_true")
    _destination_option(cleanup)

    sync = sub.add_parser("sync", help="copy good backups that a destination lacks (idempotent)")
    _destination_option(sync)
    sync.add_argument("--dry-run", action="store_true", help="print what would be copied; copy nothing")
    sync.add_argument("--json", action="store_true")

    health = sub.add_parser("health", help="connectivity, backup age, checksums, disk, last runs, drill "
                                           "(Nagios exit codes)")
    health.add_argument("--json", action="store_true")

    serve = sub.add_parser("serve", help="HTTP /metrics (Prometheus) and /healthz (health JSON, 200 or 503)")
    serve.add_argument("--listen", help="HOST:PORT (default: monitoring.metrics.listen or 127.0.0.1:9187)")
    schedule = sub.add_parser("schedule", help="run every scheduled job in the foreground, on the timers' "
                              "schedules (containers, hosts without systemd or cron); SIGTERM stops it, SIGHUP "
                              "reloads the configuration")
    schedule.add_argument("--log-format", choices=("text", "json"), default="text",
                          help="one line per event on stdout: text or a JSON object (default: text)")
    schedule.add_argument("--serve", metavar="HOST:PORT", help="also serve /metrics, /healthz and /livez here")
    schedule.add_argument("--grace", metavar="DURATION",
                          help="on SIGTERM/SIGINT, how long a running job gets to finish before it is stopped: "
                               "seconds or e.g. 10m (default: $BACKUP_SCHEDULE_GRACE or 20)")
    schedule.add_argument("--jitter", metavar="DURATION",
                          help="start each run up to this long late, at random: seconds or e.g. 5m "
                               "(default: $BACKUP_SCHEDULE_JITTER or 0)")
    push = sub.add_parser("wal-push", help="archive one WAL file (archive_command = '... wal-push %%p')")
    push.add_argument("path", help="the WAL file (%%p)")
    push.add_argument("--json", action="store_true")
    fetch = sub.add_parser("wal-fetch", help="write one archived WAL file (restore_command = '... wal-fetch %%f %%p'); "
                                             "exit 1 when it is not archived")
    fetch.add_argument("walname", help="the WAL file's name (%%f)")
    fetch.add_argument("dest", help="where to write it (%%p)")
    fetch.add_argument("--spool", metavar="DIR",
                       help="serve the file from DIR when a background prefetcher put it there, and start one that "
                            "fetches the next segments into DIR (wal_prefetch ahead; restore --pgdata writes "
                            "%s, with wal-prefetch-stop as recovery_end_command)" % SPOOL.replace("%", "%%"))
    _destination_option(fetch)
    receive = sub.add_parser("wal-receive", help="stream WAL with pg_receivewal through a replication slot and "
                                                 "archive every completed file (a service; SIGTERM stops it)")
    receive.add_argument("--slot", help="the physical replication slot, created when missing "
                                        "(default: $BACKUP_WAL_SLOT, else seawall_pgbackup)")
    receive.add_argument("--json", action="store_true")
    stop = sub.add_parser("wal-prefetch-stop", help="stop the WAL prefetcher of a spool and remove the spool "
                                                    "(recovery_end_command)")
    stop.add_argument("spool", metavar="DIR")
    add_encryption_commands(sub)
    return parser


def _destination_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", metavar="NAME",
                        help="work on the copies at this destination (from backup.destinations) instead of the backup directory")


def _restore_check_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-url", help="server to restore on (its database part is ignored; "
                                             "default: DATABASE_URL's server)")
    parser.add_argument("--probe", action="append", default=[], metavar="SQL",
                        help="a query that must return true on the restored database (repeatable)")
    _with_globals_option(parser)


def _with_globals_option(parser: argparse.ArgumentParser) -> None:
    # Unset (None): the engine's one default (ops/verify.globals_default), the same in every front end.
    parser.add_argument("--with-globals", action=argparse.BooleanOptionalAction, default=None,
                        help="create the backup's roles first (default: only on another server than DATABASE_URL's)")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _print_json(document: Any) -> None:
    _out(json.dumps(document, indent=2, sort_keys=True, default=str))


def _cmd_create(cfg, args) -> int:
    from ..ops.backup import (BackupOutcome, preflight_backup, restore_command,  # pylint: disable=import-outside-toplevel
                              run_backup)

    if args.dry_run:
        checked = preflight_backup(cfg, args.kind)
        if args.json:
            _print_json({"preflight": checked})
        else:
            for line in checked:
                _out("OK  %s" % line)
        return 0
    outcome = BackupOutcome()
    copy_error = None
    try:
        run_backup(cfg, args.kind, outcome)
    except BackupError as exc:
        if outcome.backup is None:
            raise
        copy_error = exc  # the local backup stays complete and listed; the command still fails
    backup = outcome.backup
    if args.json:
        _print_json(backup.manifest.to_dict())
        if copy_error:
            raise copy_error
        return 0
    _out("created %s (%s of %s, %d bytes, %.1f s)"
         % (backup.id, backup.kind, backup.database, backup.size, backup.manifest.duration_seconds or 0))
    for entry in backup.manifest.files:
        _out("  %s" % backup.file_path(entry))
    _out("restore with: %s" % restore_command(backup))
    for copy in backup.manifest.copies:
        _out("  copy at %s: %s" % (copy.destination, copy.uri))
    if copy_error:
        raise copy_error
    return 0


def _cmd_list(cfg, args) -> int:
    from ..ops.listing import list_backups  # pylint: disable=import-outside-toplevel

    rows = list_backups(cfg, kind=args.kind, database=args.database, destination=args.destination,
                        include_bad=args.include_bad)
    _warn_skipped(cfg, args.destination)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        _out("no backups in %s" % open_repository(cfg, args.destination).where)
        return 0
    _out("%-45s %-8s %-20s %-25s %12s" % ("ID", "TYPE", "DATABASE", "CREATED", "SIZE")
         + ("  STATUS" if args.include_bad else ""))
    for row in rows:
        if row["id"] is None:  # a manifest that is not valid: where it is and why
            name = os.path.basename(row["manifest"])
            _out("%-45s %-8s %-20s %-25s %12s  BAD: %s" % (name, "-", "-", "-", "-", row["reason"]))
            continue
        _out("%-45s %-8s %-20s %-25s %12d" % (row["id"], row["type"], row["database"], row["created_at"], row["size"])
             + (("  ok" if row["good"] else "  BAD: %s" % row.get("reason")) if args.include_bad else "")
             + (" [old encryption format: rekey]" if row.get("legacy_format") else "")
             + ("  WAL %s..%s timeline %s" % (row["start_lsn"], row["stop_lsn"], row["timeline"])
                if row.get("start_lsn") else "")
             + ("  %s link %d of %s%s" % (
                 row.get("incremental") or "native", len(row["chain"]) - 1, row["chain"][0],
                 "  BROKEN: %s" % row["chain_problem"] if row.get("chain_problem") else "")
                if row.get("parent") and row.get("chain") else ""))
    return 0


def _warn_skipped(cfg, destination: Optional[str]) -> None:
    """One stderr line naming the manifests the listing skipped, and why (stdout keeps its shape for scripts)."""
    invalid = open_repository(cfg, destination).invalid_manifests()
    if invalid:
        _err("%s: warning: %d manifest%s skipped, not trusted: %s"
             % (PROG, len(invalid), "" if len(invalid) == 1 else "s",
                "; ".join("%s: %s" % (where, why) for where, why in invalid)))


def _cmd_restore(cfg, args) -> int:
    from ..ops.restore import restore_backup  # pylint: disable=import-outside-toplevel

    if args.target_url and DbTarget(args.target_url).url != args.target_url:
        _err("%s: warning: a password in --target-url is visible to other users in 'ps'; "
             "use a passfile (PGPASSFILE) instead" % PROG)
    if args.pgdata is not None:
        return _restore_pgdata(cfg, args)
    if _target(cfg, args) is not None:
        raise ConfigError("a recovery target goes with a data directory (a base backup restored with its WAL "
                          "archive), not with a restore into a database")
    result = restore_backup(cfg, args.backup, target_url=args.target_url, clean=args.clean,
                            with_globals=args.with_globals, jobs=args.jobs, kind=args.kind, before=args.before,
                            tables=args.table, schemas=args.schema, destination=args.destination,
                            keep_going=args.keep_going)
    if args.json:
        _print_json(result.as_dict())
        return 0
    _out("restored %s into %s in %.1f s%s%s"
         % (result.backup_id, result.target, result.seconds,
            " (replaced the existing database)" if result.replaced else "",
            ", globals applied" if result.globals_applied else ""))
    return 0


def _restore_pgdata(cfg, args) -> int:
    from ..ops.restore import restore_data_directory  # pylint: disable=import-outside-toplevel

    for flag, value in (("--target-url", args.target_url), ("--clean", args.clean), ("--table", args.table),
                        ("--schema", args.schema), ("--keep-going", args.keep_going), ("--jobs", args.jobs),
                        ("--with-globals", args.with_globals)):
        if value:
            raise ConfigError("%s does not apply to --pgdata (a base backup restored into a data directory)" % flag)
    target = _target(cfg, args)
    if target is not None:
        return _restore_point_in_time(cfg, args, target)
    result = restore_data_directory(cfg, args.backup, args.pgdata, kind=args.kind, before=args.before,
                                    destination=args.destination, config_file=_config_file(args))
    if args.json:
        _print_json(result)
        return 0
    if result.get("recovery_target"):  # a WAL-method incremental: its parents' data, recovery to its end
        return _print_recovery(result)
    _out("restored %s into data directory %s (%d files, WAL %s..%s, timeline %s) in %.1f s"
         % (result["backup_id"], result["pgdata"], result["files"], result["start_lsn"], result["stop_lsn"],
            result["timeline"], result["seconds"]))
    if result.get("chain"):
        _out("combined %s" % " + ".join(result["chain"]))
    _out("start it with: pg_ctl -D %s start (as the owner of the directory; not as root)" % result["pgdata"])
    return 0


def _target(cfg, args):
    from ..ops.pitr import target_from  # pylint: disable=import-outside-toplevel

    return target_from(args.target_time, args.target_lsn, args.target_xid, args.target_name, args.target_immediate,
                       args.target_latest, cfg.timezone)


def _config_file(args) -> Optional[str]:
    """The configuration file this run read, for the restore_command written into a data directory."""
    return getattr(args, "config", None) or os.environ.get("BACKUP_CONFIG") or None


def _restore_point_in_time(cfg, args, target) -> int:
    from ..ops.pitr import restore_point_in_time  # pylint: disable=import-outside-toplevel

    if args.before:
        raise ConfigError("a recovery target chooses its base backup itself; name a backup id instead of a time "
                          "to restore before")
    result = restore_point_in_time(cfg, args.backup, args.pgdata, target, kind=args.kind,
                                   destination=args.destination,
                                   config_file=_config_file(args))
    if args.json:
        _print_json(result)
        return 0
    return _print_recovery(result)


def _print_recovery(result) -> int:
    _out("restored %s into data directory %s (%d files) for recovery to %s%s"
         % (result["backup_id"], result["pgdata"], result["files"], result["recovery_target_text"],
            " (the end of %s)" % result["wal_link"] if result.get("wal_link") else ""))
    if result.get("chain") and len(result["chain"]) > 1:
        _out("combined %s" % " + ".join(result["chain"]))
    _out("the archive reaches %s%s; recovery settings are in postgresql.auto.conf (recovery.signal)"
         % (result["archive_reaches_lsn"], "; recovery stops at the %s" % result["stop_record"]
            if result.get("stop_record") else ""))
    _out("start it with: pg_ctl -D %s start (as the owner of the directory, who must be able to run "
         "wal-fetch on this backup directory)" % result["pgdata"])
    return 0


def _cmd_verify(cfg, args) -> int:
    from ..ops.verify import (DEFAULT_LEVEL, check_settings, plan_verify,  # pylint: disable=import-outside-toplevel
                              run_verify, verify_and_record)

    if args.wal:
        return _verify_wal(cfg, args)
    probes = args.probe or None  # none given: the configuration's
    repo = open_repository(cfg, args.destination)  # the backup directory, or the copies at a destination
    if args.backup:
        plan = plan_verify(cfg, args.backup, level=args.level, kind=args.kind, repo=repo)
        results = [run_verify(cfg, plan, args.target_url, probes, args.with_globals)]
    else:  # every good backup, and the data files no manifest names
        server, probes, with_globals = check_settings(cfg, args.target_url, probes, args.with_globals)
        results = verify_and_record(cfg, None, level=args.level or DEFAULT_LEVEL, kind=args.kind, server=server,
                                    probes=probes, with_globals=with_globals, repo=repo)
    if args.json:
        _print_json(results)
    else:
        for result in results:
            _out("%s %s: %s" % ("OK " if result["ok"] else "BAD", result["id"] or result["file"], result["details"]))
        if not results:
            _out("no backups to verify in %s" % os.path.abspath(cfg.backup_dir))
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise VerifyError("%d of %d backups failed verification: %s" % (len(bad), len(results), bad[0]["details"]))
    return 0


def _verify_wal(cfg, args) -> int:
    from ..ops.wal import verify_wal  # pylint: disable=import-outside-toplevel

    if args.backup or args.kind:
        raise ConfigError("verify --wal checks the whole WAL archive: leave out the backup and --type")
    result = verify_wal(cfg, args.destination, level=args.level or "archive")
    if args.json:
        _print_json([result])
    else:
        _out("%s wal: %s" % ("OK " if result["ok"] else "BAD", result["details"]))
    if not result["ok"]:
        raise VerifyError("the WAL archive failed verification: %s" % result["details"])
    return 0


def _cmd_wal_push(cfg, args) -> int:
    from ..ops.wal import wal_push  # pylint: disable=import-outside-toplevel

    result = wal_push(cfg, args.path)
    if args.json:
        _print_json(result)
    return 0


def _cmd_wal_fetch(cfg, args) -> int:
    from ..ops.wal import wal_fetch  # pylint: disable=import-outside-toplevel

    trace("full", args.walname)
    # Absent: exit 1 without a word (recovery asks for files that were never archived, e.g. the next one).
    found = wal_fetch(cfg, args.walname, args.dest, args.destination)
    if found and args.spool:
        from ..ops.walprefetch import after_fetch  # pylint: disable=import-outside-toplevel

        after_fetch(cfg, args.spool, args.walname, args.dest, args.destination)
    return 0 if found else 1


def _cmd_wal_prefetch_stop(cfg, args) -> int:  # pylint: disable=unused-argument
    stop_prefetch(args.spool)  # main() runs it before the configuration is read; here for completeness
    return 0


def _cmd_wal_receive(cfg, args) -> int:
    from ..ops.walreceive import wal_receive  # pylint: disable=import-outside-toplevel

    # Runs until SIGTERM/SIGINT (exit 0) or until pg_receivewal ends (one line, non-zero: systemd restarts it).
    result = wal_receive(cfg, args.slot)
    if args.json:
        _print_json(result)
    return 0


def _cmd_drill(cfg, args) -> int:
    from ..ops.drill import run_drill  # pylint: disable=import-outside-toplevel

    report = run_drill(cfg, args.target_url, probes=args.probe or None, with_globals=args.with_globals)
    if args.json:
        _print_json(report)
    else:
        _out("DR drill OK: %s restored on %s in %.1f s (the RTO); %s"
             % (report["backup_id"], report["server"], report["rto_seconds"] or 0, report["details"]))
    return 0


def _cmd_cleanup(cfg, args) -> int:
    from ..ops.cleanup import format_cleanup, plan_cleanup, run_cleanup  # pylint: disable=import-outside-toplevel

    if args.dry_run:
        result = plan_cleanup(cfg, tz=args.timezone, leftover_grace=args.leftover_grace, destination=args.destination)
    else:
        result = run_cleanup(cfg, tz=args.timezone, leftover_grace=args.leftover_grace, destination=args.destination)
    if args.json:
        _print_json(result)
        return 0
    for line in format_cleanup(result):
        _out(line)
    return 0


def _cmd_sync(cfg, args) -> int:
    from ..ops.sync import plan_sync, raise_failures, sync  # pylint: disable=import-outside-toplevel

    if args.dry_run:
        plan = plan_sync(cfg, destination=args.destination)
        if args.json:
            _print_json(plan)
            return 0
        for copy in plan["to_copy"]:
            _out("would copy %s to %s (%d bytes)" % (copy["id"], copy["destination"], copy["size"]))
        _out("%d to copy, %d already present at %s" % (len(plan["to_copy"]), plan["present"],
                                                       ", ".join(plan["destinations"]) or "no destination"))
        return 0
    result = sync(cfg, destination=args.destination)
    if args.json:
        _print_json(result)
    else:
        for copy in result["copied"]:
            _out("copied %s to %s: %s" % (copy["id"], copy["destination"], copy["uri"]))
        _out("%d copied, %d already present at %s" % (len(result["copied"]), result["present"],
                                                      ", ".join(result["destinations"]) or "no destination"))
    raise_failures(result)
    return 0


def _cmd_health(cfg, args) -> int:
    from ..ops.health import health  # pylint: disable=import-outside-toplevel

    report = health(cfg)
    args.health_report = report  # for the notification hook
    if args.json:
        _print_json(report)
    else:
        _out("%s: %s" % (PROG, report["status"].upper()))
        for check in report["checks"]:
            _out("  %-9s %-14s %s" % (check["status"].upper(), check["check"], check["reason"]))
    return int(report["exit_code"])


def _cmd_serve(cfg, args) -> int:
    from ..config.monitoring import load_monitoring  # pylint: disable=import-outside-toplevel
    from .serve import make_server, serve_forever  # pylint: disable=import-outside-toplevel

    server = make_server(cfg, load_monitoring(cfg.monitoring, os.environ), args.listen)
    _err("%s: serving /metrics and /healthz on http://%s:%d" % (PROG, server.server_address[0],
                                                                server.server_address[1]))
    try:
        serve_forever(server)
    except KeyboardInterrupt:
        return 0
    return 0


def _global_arguments(args) -> List[str]:
    """The options every job of ``schedule`` gets, as given to it (the jobs load the same configuration)."""
    found: List[str] = []
    for name, flag in (("config", "--config"), ("backup_dir", "--backup-dir"), ("pg_bin_dir", "--pg-bin-dir")):
        if getattr(args, name, None):
            found += [flag, os.path.abspath(getattr(args, name)) if name != "pg_bin_dir" else getattr(args, name)]
    for name, flag in (("accept_unsigned", "--accept-unsigned"), ("accept_unencrypted", "--accept-unencrypted")):
        if getattr(args, name, False):
            found.append(flag)
    return found


def _cmd_schedule(args, overrides: Dict[str, Any]) -> int:
    """The foreground scheduler: not a monitored run itself (each job it starts is one)."""
    # pylint: disable=import-outside-toplevel
    from ..config.jobs import config_jobs
    from ..config.monitoring import load_monitoring
    from ..core.clock import zone
    from ..core.duration import parse_duration
    from ..ops.scheduler import Scheduler, Signals, run_loop
    from ..repo.catalog import Repository
    from ..repo.walarchive import FOLDER

    def load():
        cfg = load_config(config_file=getattr(args, "config", None), overrides=overrides)
        jobs = config_jobs(cfg, archiving=os.path.isdir(os.path.join(cfg.backup_dir, FOLDER)))
        jitter = parse_duration("--jitter", args.jitter if args.jitter is not None else cfg.schedule_jitter)
        return cfg, jobs, zone(cfg.timezone), int(jitter.total_seconds())

    cfg, jobs, tz, jitter = load()
    grace = int(parse_duration("--grace", args.grace if args.grace is not None else cfg.schedule_grace).total_seconds())
    scheduler = Scheduler(jobs, tz, Repository(os.path.abspath(cfg.backup_dir)).log_dir,
                          global_args=_global_arguments(args), jitter=jitter, log_format=args.log_format)
    signals = Signals()

    def on_stop(signum, frame):  # pylint: disable=unused-argument
        signals.stop = True

    def on_reload(signum, frame):  # pylint: disable=unused-argument
        signals.reload = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    server = None
    served = [(cfg, load_monitoring(cfg.monitoring, os.environ))]  # what /metrics and /healthz answer with
    if args.serve:
        from .serve import make_server, serve_in_thread

        server = make_server(cfg, served[0][1], args.serve, liveness=scheduler.alive, current=lambda: served[0])
        serve_in_thread(server)
        scheduler.emit("serving", address="http://%s:%d" % server.server_address[:2], paths="/metrics,/healthz,/livez")

    def reload():
        new_cfg, new_jobs, new_tz, new_jitter = load()
        served[0] = (new_cfg, load_monitoring(new_cfg.monitoring, os.environ))
        return new_jobs, new_tz, new_jitter

    try:
        return run_loop(scheduler, reload, grace, signals)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


COMMANDS = {"create": _cmd_create, "list": _cmd_list, "restore": _cmd_restore, "verify": _cmd_verify,
            "drill": _cmd_drill, "cleanup": _cmd_cleanup, "health": _cmd_health, "sync": _cmd_sync,
            "serve": _cmd_serve, "wal-push": _cmd_wal_push, "wal-fetch": _cmd_wal_fetch,
            "wal-receive": _cmd_wal_receive, "wal-prefetch-stop": _cmd_wal_prefetch_stop}
COMMANDS.update(ENCRYPTION_COMMANDS)


# How the CLI says what an error's hint asks for (core/errors.HINTS); modules say it in their options' words.
CLI_HINTS = {
    "replace-target": " or pass --clean to replace it",
    "replace-rows": "; pass --clean to replace rows that are already there",
    "checksum-level": " (--level checksum)",
    "keygen": " (create one with '%s keygen --keyring DIR')" % PROG,
    "keygen-signing": " (create one with '%s keygen --signing --output FILE')" % PROG,
    "sync": "; run '%s sync' to retry" % PROG,
    "list": " (see '%s list')" % PROG,
    "list-destination": " (see '%s list --destination %%s')" % PROG,
    "before-latest": " (--before goes with 'latest')",
    "rekey-selection": " (backup ids, --type, --before or --all)",
    "database-url": " (the configuration file: --config or BACKUP_CONFIG)",
    "destination-primary": "; leave --destination out",
    "partial-aside": " (leave --clean out: the tables go into a new database, or into --target-url)",
}


def _raise_interrupt(signum, frame):  # pylint: disable=unused-argument
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    # A prefetched WAL file: no configuration, no parser. Without argv the command's entry (cli/__init__.py,
    # __main__.py) has already tried.
    served = fast(argv) if argv is not None else None
    if served is not None:
        return served
    if sys.version_info[:2] < MINIMUM_PYTHON:
        _err("%s: error: Python %d.%d or later is needed; %s is Python %s"
             % ((PROG,) + MINIMUM_PYTHON + (sys.executable, sys.version.split()[0])))
        return ConfigError.exit_code
    args = _parser().parse_args(argv)
    code = _main(args)
    if args.command == "wal-fetch" and 1 < code <= 125:
        # PostgreSQL takes any restore_command status up to 125 for "not archived" and ends recovery there
        # (promoting, with recovery_target_timeline = latest): a file that is archived but cannot be fetched must
        # stop recovery instead, and a status above 125 does (FATAL). 200 + the usual code keeps it readable.
        return 200 + code if code <= 55 else 255
    return code


def _main(args: argparse.Namespace) -> int:
    # A timer stopping us sends SIGTERM: unwind like Ctrl-C so partial files are removed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    overrides: Dict[str, Any] = {"backup_dir": getattr(args, "backup_dir", None),
                                 "pg_bin_dir": getattr(args, "pg_bin_dir", None)}
    if getattr(args, "compression", None):
        overrides["compression"] = args.compression
    for name in ("accept_unsigned", "accept_unencrypted"):
        if getattr(args, name, False):
            overrides[name] = True
    try:
        if args.command == "schedule":
            return _cmd_schedule(args, overrides)
        cfg = load_config(config_file=getattr(args, "config", None), overrides=overrides)
        from ..ops.perform import perform  # pylint: disable=import-outside-toplevel

        command = functools.partial(_guarded, COMMANDS[args.command], cfg, args)
        if getattr(args, "dry_run", False):
            return command()  # a plan is not a run: recorded by nobody, as in a module's check mode
        # run records, metrics, notifications and dead-man's-switch pings around the monitored commands
        kind = getattr(args, "kind", None) or (cfg.backup_type if args.command == "create" else None)
        return perform(cfg, args.command, kind, command, report=lambda: getattr(args, "health_report", None))
    except BackupError as exc:
        _err("%s: error: %s" % (PROG, render(exc, CLI_HINTS)))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("%s: error: interrupted; nothing incomplete was kept" % PROG)
        return INTERRUPTED_EXIT_CODE
    except Exception as exc:  # pylint: disable=broad-except  # a bug outside a command: one line
        internal = _internal(exc)
        _err("%s: error: %s" % (PROG, internal))
        return internal.exit_code


def _guarded(command, cfg, args) -> int:
    """``command``, with an unexpected exception turned into an InternalError the run hook records."""
    try:
        return command(cfg, args)
    except (BackupError, KeyboardInterrupt):
        raise
    except Exception as exc:  # pylint: disable=broad-except  # a bug: one line, the traceback only when asked
        raise _internal(exc) from None


def _internal(exc: Exception) -> InternalError:
    """The one-line error for an exception the engine did not expect; SEAWALL_DEBUG=1 prints the traceback."""
    if os.environ.get("SEAWALL_DEBUG", "") not in ("", "0"):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    # The type and where it was raised, not its text: an exception's text may quote a URL or a record.
    frames = traceback.extract_tb(exc.__traceback__)
    where = " at %s:%d" % (os.path.basename(frames[-1].filename), frames[-1].lineno) if frames else ""
    return InternalError("internal error (%s%s); run again with SEAWALL_DEBUG=1 for the traceback and report it"
                         % (type(exc).__name__, where))


if __name__ == "__main__":
    raise SystemExit(main())
