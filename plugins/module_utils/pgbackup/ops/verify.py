# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove a backup is intact: checksums against the manifest, then the archive read back in full."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..codec.integrity import verify_checksums
from ..codec.stored import open_stored
from ..config.connection import DbTarget
from ..config.settings import Config
from ..core.clock import iso, parse_iso, utc_now
from ..core.duration import format_duration
from ..core.errors import (BackupError, ClientToolError, ConfigError, ConnectionFailed, LockedError, ResourceError,
                           VerifyError)
from ..core.process import alive
from ..core.runlog import RunLog
from ..model.manifest import PARTIAL_SUFFIX, Backup, FileEntry, Verification, slug
from ..pg.binaries import any_psql, select_tools
from ..pg.client import execute, query, quote_ident
from ..pg.pipeline import CHUNK
from ..pg.restore.archive import list_archive
from ..pg.restore.checks import environment_failure
from ..pg.restorer import Restorer
from ..pg.snapshot import count_rows
from ..repo.catalog import Repository, open_repository
from .backup import CLUSTER_DUMP_END, CLUSTER_DUMP_HEAD
from .incremental import check_wal_link
from .physical import check_base_archive, is_physical

LEVELS = ("checksum", "archive", "restore")
# The defaults of verify and drill, for every front end (CLI, modules, timers): decided here only.
DEFAULT_LEVEL = "archive"
DEFAULT_KIND = "full"  # what 'latest' picks
RESTORABLE_KINDS = ("full", "schema")
# Failures of the surroundings, not of the backup: raised to the caller, never recorded in the manifest.
UNVERIFIABLE = (ConnectionFailed, ClientToolError, ConfigError, LockedError, ResourceError)


def source_target(cfg: Config) -> Optional[DbTarget]:
    return DbTarget(cfg.database_url) if cfg.database_url else None


def source_database(cfg: Config) -> Optional[str]:
    """The database of DATABASE_URL: 'latest' means the newest backup of it (of any database when unset)."""
    source = source_target(cfg)
    return source.dbname if source else None


def server_of(cfg: Config, url: Optional[str]) -> Optional[DbTarget]:
    """The server (or database) ``url`` names, with DATABASE_URL's password when user and host are the same."""
    if not url:
        return None
    server = DbTarget(url)
    source = source_target(cfg)
    if source is not None:
        server.borrow_password(source)
    return server


def globals_default(cfg: Config, server: Optional[DbTarget], with_globals: Optional[bool]) -> bool:
    """Whether to create the backup's roles and tablespaces before restoring on ``server`` (None: the source's).

    Unset, only on another server than DATABASE_URL's: another cluster lacks the roles that own the
    objects; the source's own cluster has them. The one rule for restore, verify and drill, every front end.
    """
    if with_globals is not None:
        return bool(with_globals)
    source = source_target(cfg)
    return bool(server is not None and source is not None and server.hostinfo != source.hostinfo)


def check_settings(cfg: Config, target_url: Optional[str] = None, probes: Optional[Sequence[str]] = None,
                   with_globals: Optional[bool] = None) -> Tuple[Optional[DbTarget], List[str], bool]:
    """(server, probes, with_globals) of a test restore or drill, unset options defaulted.

    Probes unset (None): the configuration's ``backup.verify.probes``.
    """
    server = server_of(cfg, target_url)
    return (server, list(cfg.verify_probes if probes is None else probes),
            globals_default(cfg, server, with_globals))


def age_of(moment_text: Any) -> Optional[int]:
    """Seconds since an engine ISO time; None when it is missing or unreadable."""
    try:
        return max(0, int((utc_now() - parse_iso(moment_text)).total_seconds()))
    except (TypeError, ValueError):
        return None


def passed_within(verification: Optional[Dict[str, Any]], level: str, max_age: int) -> Optional[int]:
    """Age of ``verification`` when it passed at ``level`` or higher less than ``max_age`` s ago, else None."""
    if not verification or verification.get("ok") is not True or verification.get("level") not in LEVELS:
        return None
    if LEVELS.index(verification["level"]) < LEVELS.index(level):
        return None
    age = age_of(verification.get("at"))
    if age is None or age >= max_age:
        return None
    return age


@dataclass
class VerifyPlan:
    """What a verify run would do (check mode and diff show it): verify ``backup`` at ``level``, or skip it."""

    backup: Backup
    level: str
    recorded: Optional[Dict[str, Any]]  # the verification recorded before the run
    skip_reason: Optional[str] = None  # set: nothing runs (a recent enough verification passed)
    repo: Optional[Repository] = None  # the catalog it is in (None: the backup directory)

    @property
    def runs(self) -> bool:
        return self.skip_reason is None

    @property
    def reason(self) -> str:
        return self.skip_reason or "a new %s verification of %s" % (self.level, self.backup.id)


def plan_verify(cfg: Config, selector: Optional[str] = None, level: Optional[str] = None,
                kind: Optional[str] = None, max_age: int = 0, repo: Optional[Repository] = None) -> VerifyPlan:
    """Choose the backup to verify and say whether it needs verifying.

    ``selector`` unset or 'latest': the newest good backup of ``kind`` (default full) of DATABASE_URL's
    database; an id or path may name a backup marked bad. ``max_age`` (seconds): skip when the recorded
    verification passed at ``level`` or a higher one less than that long ago.
    """
    level = level or DEFAULT_LEVEL
    if level not in LEVELS:
        raise ConfigError("level=%r is not valid: use one of %s" % (level, ", ".join(LEVELS)))
    selector = selector or "latest"
    latest = selector == "latest"
    backup = (repo or open_repository(cfg)).find(selector, kind=(kind or DEFAULT_KIND) if latest else None,
                                                 database=source_database(cfg) if latest else None,
                                                 allow_bad=True)
    if level == "restore" and is_physical(backup):
        raise ConfigError("the restore level is not available yet for base backups: verify %s at level archive "
                          "(pg_verifybackup), or restore it into a data directory and start it" % backup.id)
    if level == "restore" and backup.kind not in RESTORABLE_KINDS:
        # Refused before anything runs: recorded, the refusal would mark a sound backup bad.
        raise ConfigError("the restore level needs a full or schema backup; %s is a %s backup"
                          % (backup.id, backup.kind))
    recorded = backup.manifest.verification.to_dict() if backup.manifest.verification else None
    plan = VerifyPlan(backup, level, recorded, repo=repo)
    age = passed_within(recorded, level, max_age) if max_age > 0 else None
    if age is not None and recorded:
        plan.skip_reason = ("%s passed %s %s verification %s ago, younger than max_age %s"
                            % (backup.id, "an" if recorded["level"] == "archive" else "a", recorded["level"],
                               format_duration(age), format_duration(max_age)))
    return plan


def run_verify(cfg: Config, plan: VerifyPlan, target_url: Optional[str] = None,
               probes: Optional[Sequence[str]] = None, with_globals: Optional[bool] = None) -> Dict[str, Any]:
    """Verify the planned backup (unless the plan skips it) and record the result: its verification record."""
    if not plan.runs:
        return dict({"id": plan.backup.id, "type": plan.backup.kind}, **(plan.recorded or {}))
    server, probes, with_globals = check_settings(cfg, target_url, probes, with_globals)
    try:
        return verify_and_record(cfg, plan.backup.id, level=plan.level, server=server, probes=probes,
                                 with_globals=with_globals, repo=plan.repo)[0]
    finally:
        if server is not None:
            server.close()


def _check_archive(backup: Backup, entry: FileEntry, cfg: Config) -> str:
    """Decompress fully; pg_restore must read the whole table of contents (pg_verifybackup a base tar)."""
    path = backup.file_path(entry)
    if entry.role == "base":
        return check_base_archive(cfg, backup)
    if entry.format == "plain":
        head, tail = b"", b""
        try:
            with open_stored(backup, entry, cfg) as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    head = head or chunk[:4096]
                    tail = (tail + chunk)[-4096:]
        except (EOFError, OSError, ValueError) as exc:
            raise VerifyError("%s: %s does not decompress: %s" % (backup.id, path, exc)) from None
        if CLUSTER_DUMP_HEAD not in head or CLUSTER_DUMP_END not in tail:
            raise VerifyError("%s: %s is not a complete pg_dumpall script" % (backup.id, path))
        return "globals script complete"
    major = (backup.manifest.client.major if backup.manifest.client else None) or 0
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's pg_dump", tools=("pg_restore",))
    try:
        with open_stored(backup, entry, cfg) as src:
            # pg_restore --list reads only the table of contents; list_archive still reads (checks) every byte.
            entries = list_archive(tools.path("pg_restore"), src, "%s: %s" % (backup.id, path), VerifyError)
    except VerifyError as exc:
        if "unsupported version" in str(exc):  # pg_restore older than the archive's format: the tools, not the backup
            raise ClientToolError("%s could not be verified (not marked bad): pg_restore is too old for its archive: "
                                  "%s" % (backup.id, exc)) from None
        raise
    except (EOFError, OSError, ValueError) as exc:
        raise VerifyError("%s: %s does not decompress: %s" % (backup.id, path, exc)) from None
    if not entries:
        raise VerifyError("%s: %s lists no objects" % (backup.id, path))
    return "%d archive entries" % len(entries)


SCRATCH_PREFIX = "seawall_verify_"
# seawall_verify_<host tag>_<pid>_<random>_<backup slug>: whose run it is, so a killed run's can be found.
_SCRATCH = re.compile(r"^seawall_verify_(?P<host>[0-9a-f]{4})_(?P<pid>[0-9]+)_[0-9a-f]+_")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:4]


def scratch_name(backup_id: str) -> str:
    """A scratch database name of this run only (host, pid and a random part first), within 63 bytes: two
    checks at once (a verify and a drill, two timers, two hosts) never restore into, or drop, each other's."""
    unique = "%s%s_%d_%s_" % (SCRATCH_PREFIX, _host_tag(), os.getpid(), secrets.token_hex(3))
    # The restorer appends its staging suffix to the first 46 bytes: the unique part stays within them.
    return (unique + slug(backup_id))[:46]


def drop_stale_scratch(psql: str, admin: DbTarget) -> List[str]:
    """Drop the scratch databases of checks killed on this host (their process is gone); the names dropped.

    Another host's, or a live run's, are never touched: the name says whose run it was.
    """
    rows = query(psql, admin, "SELECT datname FROM pg_database WHERE datname LIKE 'seawall\\_verify\\_%'")
    dropped = []
    for (name,) in rows:
        match = _SCRATCH.match(name)
        if match and match.group("host") == _host_tag() and not alive(int(match.group("pid"))):
            try:
                execute(psql, admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % quote_ident(name))
                dropped.append(name)
            except BackupError:
                pass  # in use after all, or no privilege: the next run tries again
    return dropped


def _check_restore(cfg: Config, backup: Backup, server: DbTarget, probes: Sequence[str],
                   with_globals: bool, record: Dict[str, Any]) -> str:
    """Restore into a scratch database, compare row counts with the backup's, run the probes, drop it."""
    if is_physical(backup):
        raise ConfigError("%s: the restore level is not available yet for base backups: use level archive"
                          % backup.id)
    if backup.kind not in ("full", "schema"):
        raise ConfigError("%s: the restore level needs a full or schema backup, not %s" % (backup.id, backup.kind))
    scratch = server.for_database(scratch_name(backup.id))
    psql = any_psql(cfg.pg_bin_dir)
    try:
        drop_stale_scratch(psql, scratch.for_database("postgres"))
    except BackupError:
        pass  # a cleanup of earlier runs never stops this one
    try:
        try:
            result = Restorer(cfg, backup, scratch, clean=True, with_globals=with_globals).run()
        except UNVERIFIABLE:
            raise  # the server, the tools or the settings failed, not the backup: nothing is recorded
        except BackupError as exc:
            # The archive read back whole already: a server that lacks what the backup uses (an extension,
            # ICU, a role), space or a connection says nothing about the backup, so it is never marked bad.
            surroundings = environment_failure(exc)
            if surroundings is not None:
                surroundings.args = ("%s could not be verified (not marked bad): %s" % (backup.id, surroundings),)
                raise surroundings from None
            raise VerifyError("%s: restore failed: %s" % (backup.id, exc)) from None
        record["rto_seconds"] = result.seconds
        details = ["restored %d objects into %s on %s in %.1f s%s"
                   % (result.objects or 0, scratch.dbname, server.hostinfo, result.seconds,
                      ", the backup's roles created first" if result.globals_applied else "")]
        recorded = backup.manifest.table_rows
        if backup.kind == "full" and recorded is not None:
            counts = count_rows(psql, scratch)
            wrong = ["%s has %s rows, the backup recorded %d" % (k, counts.get(k, "no"), v)
                     for k, v in sorted(recorded.items()) if counts.get(k) != v]
            if wrong:
                raise VerifyError("%s: restored rows differ: %s" % (backup.id, "; ".join(wrong[:5])))
            details.append("%d tables with the recorded row counts" % len(recorded))
        for probe in probes:
            try:
                answer = query(psql, scratch, probe)
            except BackupError as exc:  # a probe that cannot run says nothing about the backup
                raise ConfigError("probe %r cannot run on the restored database: %s" % (probe, exc),
                                  step="probe") from None
            if answer != [["t"]]:
                raise VerifyError("%s: probe %r returned %s, not true" % (backup.id, probe, answer))
        if probes:
            details.append("%d probes true" % len(probes))
        return "; ".join(details)
    finally:
        try:
            execute(psql, scratch.for_database("postgres"), "DROP DATABASE IF EXISTS %s WITH (FORCE)"
                    % quote_ident(scratch.dbname or ""))
        except BackupError:
            pass
        scratch.close()


def verify(cfg: Config, backup: Backup, level: str = DEFAULT_LEVEL, server: Optional[DbTarget] = None,
           probes: Sequence[str] = (), with_globals: bool = False) -> Dict[str, Any]:
    """Check ``backup`` up to ``level`` and return the verification record (not yet saved)."""
    if level not in LEVELS:
        raise ConfigError("level=%r is not valid: use one of %s" % (level, ", ".join(LEVELS)))
    started = time.monotonic()
    record: Dict[str, Any] = {"level": level, "at": iso(utc_now()), "ok": True}
    details: List[str] = []
    try:
        verify_checksums(backup)
        details.append("checksums match")
        if backup.manifest.method == "wal":  # a WAL-method incremental: its range in the WAL archive
            details.append(check_wal_link(cfg, backup, deep=level != "checksum"))
        if level in ("archive", "restore"):
            for entry in backup.manifest.files:
                details.append(_check_archive(backup, entry, cfg))
        if level == "restore":
            if server is None:
                server = DbTarget(cfg.require_database_url())
            details.append(_check_restore(cfg, backup, server, probes, with_globals, record))
    except VerifyError as exc:
        record["ok"] = False
        details = [str(exc)]
    record["details"] = "; ".join(details)
    record["duration_seconds"] = round(time.monotonic() - started, 3)
    return record


def verify_copy(cfg: Config, repo: Repository, backup: Backup, level: str = DEFAULT_LEVEL,
                **options: Any) -> Dict[str, Any]:
    """Verify a backup in another store: checksums streamed from it; deeper levels on a scratch copy."""
    if level == "checksum" or backup.manifest.method == "wal":  # a WAL link: the destination's WAL archive
        started = time.monotonic()
        record: Dict[str, Any] = {"level": level, "at": iso(utc_now()), "ok": True}
        try:
            record["details"] = (check_wal_link(cfg, backup, level != "checksum", repo.destination)
                                 if backup.manifest.method == "wal" else repo.check_objects(backup))
        except VerifyError as exc:
            record.update(ok=False, details=str(exc))
        record["duration_seconds"] = round(time.monotonic() - started, 3)
    else:
        try:
            with repo.local_copy(backup) as local:
                record = verify(cfg, local, level, **options)
        except VerifyError as exc:  # the fetch found an object that differs from the manifest
            record = {"level": level, "at": iso(utc_now()), "ok": False, "details": str(exc)}
    record["destination"] = repo.destination
    return record


def verify_and_record(cfg: Config, selector: Optional[str] = None, level: str = DEFAULT_LEVEL,
                      kind: Optional[str] = None, server: Optional[DbTarget] = None, probes: Sequence[str] = (),
                      with_globals: bool = False, repo: Optional[Repository] = None) -> List[Dict[str, Any]]:
    """Verify one backup (or every good one when ``selector`` is None) and record each result in its manifest.

    ``repo``: the catalog to verify (default the backup directory; a destination's from open_repository).
    The lock is held only to record: a long restore-level check never delays a scheduled backup.
    """
    repo = repo or open_repository(cfg)
    log = RunLog(Repository(cfg.backup_dir).log_dir)
    where = {"destination": repo.destination} if repo.destination else {}
    targets = [repo.find(selector, kind=kind, allow_bad=True)] if selector else repo.backups(kind=kind)
    results = []
    for backup in targets:
        if repo.destination:  # recorded in the destination's manifest (one whole-object put)
            record = verify_copy(cfg, repo, backup, level, server=server, probes=probes, with_globals=with_globals)
            backup.manifest.verification = Verification.from_dict(record, repo.location(repo.key_of(backup)))
            if repo.trust.can_sign:  # a restore-only host (a trusted signer's public key) reports, never records
                repo.save(backup)
            results.append(dict({"id": backup.id, "type": backup.kind}, **record))
            _log_result(log, backup, level, record, where)
            continue
        try:
            record = verify(cfg, backup, level, server=server, probes=probes, with_globals=with_globals)
        except UNVERIFIABLE as exc:  # could not verify: said in the log, never recorded as bad
            log.failure("verify-unverifiable", id=backup.id, level=level, step=exc.step, error=str(exc), **where)
            raise
        if repo.trust.can_sign:  # a restore-only host (a trusted signer's public key) reports, never records
            with repo.lock(wait_seconds=600):
                current = repo.reload(backup)
                if current is None:
                    raise VerifyError("%s was removed while it was being verified" % backup.id)
                current.manifest.verification = Verification.from_dict(record, current.manifest_path)
                repo.save(current)
        results.append(dict({"id": backup.id, "type": backup.kind}, **record))
        _log_result(log, backup, level, record, where)
    if not selector:
        results.extend(_orphans(repo, kind, log))
    return results


def _log_result(log: RunLog, backup: Backup, level: str, record: Dict[str, Any], where: Dict[str, Any]) -> None:
    if record["ok"]:
        log.info("verify-ok", id=backup.id, level=level, seconds=record["duration_seconds"], **where)
    else:
        log.failure("verify-failed", id=backup.id, level=level, step="verify", error=record["details"], **where)


def _orphans(repo: Repository, kind: Optional[str], log: RunLog) -> List[Dict[str, Any]]:
    """Data files no manifest names: a deleted manifest shows here (a running backup's .partial does not)."""
    found = []
    for path in repo.leftovers():
        folder = os.path.basename(os.path.dirname(path))
        if path.endswith(PARTIAL_SUFFIX) or os.path.basename(path).startswith(".") or (kind and folder != kind):
            continue
        details = "%s: no manifest names this file (an interrupted backup, or its manifest was deleted)" % path
        found.append({"id": None, "file": path, "type": folder, "ok": False, "details": details})
        log.failure("verify-failed", path=path, step="verify", error=details)
    return found
