# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time restore: a recovery target, the base (or chain) to start from, whether the archive reaches it.

``restore --pgdata DIR`` with a target rebuilds the data directory from a base backup or an incremental chain
(ops/physical.py) and writes recovery settings: restore_command = our ``wal-fetch``, recovery_target_* and
recovery_target_action = 'promote', in postgresql.auto.conf, plus recovery.signal. Everything that can refuse
runs first and reads only (docs/pitr.md): PostgreSQL 13+ stops with FATAL when recovery ends before its target,
and a target inside the base backup's own WAL cannot be reached from it, so such a target is refused in one
line naming what the archive reaches, before DIR is touched.

What PostgreSQL stops at is read from the archived WAL itself with pg_waldump (pg/waldump.py): the first
commit/abort after a target time, the commit/abort of a target xid, the restore point of a target name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config.settings import Config
from ..core.clock import iso, parse_moment
from ..core.errors import BackupError, ConfigError, NotFound, RestoreError
from ..core.fsutil import write_file_atomic
from ..core.runlog import RunLog
from ..core.walspool import SPOOL
from ..model.manifest import Backup
from ..pg.binaries import ClientTools, select_tools
from ..pg.waldump import WalRecord, dump, format_lsn
from ..repo.catalog import Repository, open_repository, present
from ..repo.walarchive import Continuity, Segment, WalArchive, continuity, parse_lsn, segment_size_of
from ..repo.walstream import STREAM, copy_from_stream, with_stream
from .physical import check_chain, check_empty_target, restore_pgdata, restored_label, scratch_dir

TARGET_KINDS = ("time", "lsn", "xid", "name", "immediate", "latest")
MTIME_SLACK = timedelta(seconds=5)  # file-system timestamps may lag the clock commit times are read from
NAME_LIMIT = 63  # MAXFNAMELEN - 1: the longest restore point name PostgreSQL keeps
HOST_COMMAND = "seawall-pgbackup"
RUN_MODULE = "seawall_pgbackup.cli.run"  # python -m RUN_MODULE: the command without its console script
AUTO_CONF = "postgresql.auto.conf"
MARK = "# seawall.pgbackup point-in-time recovery"
# Settings wal-fetch needs to read the archive as this run does (paths and public keys only, never key material),
# carried in restore_command as environment assignments: the server does not have our environment.
CARRIED = (("BACKUP_ENCRYPTION", "encryption"), ("BACKUP_ENCRYPTION_MODE", "encryption_mode"),
           ("BACKUP_ENCRYPTION_KEY_FILE", "encryption_key_file"), ("BACKUP_ENCRYPTION_KEYRING", "encryption_keyring"),
           ("BACKUP_ENCRYPTION_IDENTITY_FILE", "encryption_identity_file"),
           ("BACKUP_ENCRYPTION_SIGNING_KEY_FILE", "encryption_signing_key_file"),
           ("BACKUP_ENCRYPTION_TRUSTED_SIGNERS", "encryption_trusted_signers"),
           ("BACKUP_ENCRYPTION_RETIRED_KEYS", "encryption_retired_keys"),
           ("BACKUP_REPOSITORY_ID", "repository_id"), ("BACKUP_ACCEPT_UNSIGNED", "accept_unsigned"),
           ("BACKUP_ACCEPT_UNENCRYPTED", "accept_unencrypted"), ("BACKUP_WAL_PREFETCH", "wal_prefetch"))
_XID = re.compile(r"^[0-9]{1,20}$")
# Recovery settings an earlier point-in-time recovery left (a restored server keeps them after promotion, and its
# base backups copy the file): beside ours they would add a second target, or stop a 'latest' recovery early.
_STALE = re.compile(rb"(?m)^[ \t]*(?:restore_command|recovery_end_command|recovery_target\w*)[ \t]*(?:=|[ \t])"
                    rb"[^\r\n]*")


# ---------------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """A recovery target: ``kind`` one of TARGET_KINDS; ``value`` as written into recovery_target_<kind>."""

    kind: str
    value: Optional[str] = None
    moment: Optional[datetime] = None  # time
    lsn: Optional[int] = None  # lsn
    xid: Optional[int] = None  # xid (its 32-bit part: what WAL records carry)

    def describe(self) -> str:
        if self.kind == "time":
            return "time %s" % iso(self.moment) if self.moment else "time"
        if self.kind == "lsn":
            return "LSN %s" % self.value
        if self.kind == "xid":
            return "xid %s" % self.value
        if self.kind == "name":
            return "restore point %r" % self.value
        if self.kind == "immediate":
            return "the end of the backup (immediate)"
        return "the end of the archive (latest)"


def parse_target(kind: str, value: Optional[str] = None, tz_name: str = "UTC") -> Target:
    """A Target from one option's text; a one-line ConfigError when it is not valid."""
    if kind not in TARGET_KINDS:
        raise ConfigError("recovery target %r is not one of %s" % (kind, ", ".join(TARGET_KINDS)))
    if kind in ("immediate", "latest"):
        return Target(kind)
    text = (value or "").strip()
    if not text:
        raise ConfigError("recovery target %s needs a value" % kind)
    if kind == "time":
        try:
            moment = parse_moment(text, tz_name)
        except BackupError as exc:
            raise ConfigError("recovery target %s" % exc) from None
        moment = moment.astimezone(timezone.utc)
        return Target("time", moment.strftime("%Y-%m-%d %H:%M:%S.%f+00"), moment=moment)
    if kind == "lsn":
        try:
            lsn = parse_lsn(text)
        except ConfigError:
            raise ConfigError("recovery target LSN %r is not an LSN (like 0/3000028)" % text[:40]) from None
        return Target("lsn", format_lsn(lsn), lsn=lsn)
    if kind == "xid":
        if not _XID.match(text) or not 3 <= int(text) < 1 << 64:
            raise ConfigError("recovery target xid %r is not a transaction id (a number, 3 or more)" % text[:40])
        return Target("xid", str(int(text)), xid=int(text) & 0xFFFFFFFF)
    name = value or ""  # a restore point's name is matched exactly: ' x' and 'x' are two names
    if "\0" in name or len(name.encode("utf-8")) > NAME_LIMIT:
        raise ConfigError("recovery target name %r is not a restore point name (at most %d bytes)"
                          % (name[:80], NAME_LIMIT))
    return Target("name", name)


def target_from(time_: Optional[str] = None, lsn: Optional[str] = None, xid: Optional[str] = None,
                name: Optional[str] = None, immediate: bool = False, latest: bool = False,
                tz_name: str = "UTC") -> Optional[Target]:
    """The one target given (None when none is); a ConfigError naming them when several are."""
    given = [(kind, value) for kind, value in (("time", time_), ("lsn", lsn), ("xid", xid), ("name", name))
             if value is not None]
    given += [(kind, None) for kind, on in (("immediate", immediate), ("latest", latest)) if on]
    if len(given) > 1:
        raise ConfigError("one recovery target at a time, not %s" % " and ".join(kind for kind, _v in given))
    if not given:
        return None
    return parse_target(given[0][0], given[0][1], tz_name)


# ---------------------------------------------------------------------- recovery settings

_CONF_ESCAPES = {"\\": "\\\\", "'": "''", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def conf_quote(value: str) -> str:
    """A postgresql.conf string literal (one line: the GUC parser reads back these backslash escapes)."""
    if "\0" in value:
        raise ConfigError("a NUL character cannot be written into postgresql.conf")
    return "'" + "".join(_CONF_ESCAPES.get(c, c) for c in value) + "'"


def host_command() -> List[str]:
    """How the server runs this package: the installed command we run as, else ``python -m RUN_MODULE``."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == HOST_COMMAND and os.access(argv0, os.X_OK):
        return [argv0]
    running = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    if running != RUN_MODULE:
        found = shutil.which(HOST_COMMAND)
        if found:
            return [os.path.abspath(found)]
    if importlib.util.find_spec("seawall_pgbackup") is None:
        # e.g. run from the Ansible module: "python -m RUN_MODULE" would fail at recovery with exit 1, which
        # PostgreSQL takes for the end of the archive (a 'latest' recovery would stop at the backup, silently)
        raise ConfigError("restore_command needs the %s command on this host (install the package, e.g. the "
                          "tooling role, so that it is on PATH)" % HOST_COMMAND)
    command = [sys.executable, "-m", RUN_MODULE]
    if os.environ.get("PYTHONPATH"):  # where this run found the package (and its libraries): the server has not it
        command = ["env", "PYTHONPATH=" + os.environ["PYTHONPATH"]] + command
    return command


def _carried_value(value: Any) -> Optional[str]:
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def restore_command(cfg: Config, config_file: Optional[str] = None, command: Optional[Sequence[str]] = None) -> str:
    """restore_command for the restored server: our wal-fetch with this run's backup directory, configuration
    file and encryption settings (paths, never key material). ``%`` in them is doubled for PostgreSQL."""
    from ..config.settings import default_config  # pylint: disable=import-outside-toplevel

    defaults = default_config()
    env = []
    for name, attr in CARRIED:
        value = getattr(cfg, attr, None)
        if value != getattr(defaults, attr, None) and _carried_value(value) is not None:
            env.append("%s=%s" % (name, shlex.quote(_carried_value(value) or "")))
    words = list(command or host_command())
    if config_file:
        words += ["--config", os.path.abspath(config_file)]
    words += ["--backup-dir", os.path.abspath(cfg.backup_dir)]
    text = " ".join(env + [shlex.quote(w) for w in words])
    # The prefetch spool (ops/walprefetch.py) in the restored pg_wal, relative to the data directory the server
    # runs restore_command in: private to this cluster, on DEST's file system (a rename serves a file), and never
    # in a base backup of it (pg_basebackup skips pg_wal's contents).
    spool = " --spool %s" % shlex.quote(SPOOL) if cfg.wal_prefetch > 0 else ""
    return text.replace("%", "%%") + " wal-fetch%s %%f %%p" % spool


def recovery_end_command(cfg: Config, command: Optional[Sequence[str]] = None) -> Optional[str]:
    """recovery_end_command stopping the prefetcher and removing its spool (None without prefetch). It needs no
    configuration: core/walspool.py runs it before the engine is loaded."""
    if cfg.wal_prefetch <= 0:
        return None
    words = list(command or host_command()) + ["wal-prefetch-stop", SPOOL]
    return " ".join(shlex.quote(w) for w in words).replace("%", "%%")


def recovery_settings(target: Target, fetch_command: str, timeline: Optional[int] = None,
                      end_command: Optional[str] = None) -> List[Tuple[str, str]]:
    """The recovery parameters for ``target``, in order (name, value), values unquoted. ``timeline``: the one the
    archive was checked on (else 'latest', which takes the highest timeline archived, a descendant or not)."""
    settings = [("restore_command", fetch_command)]
    if end_command:
        settings += [("recovery_end_command", end_command)]
    following = str(timeline) if timeline else "latest"
    if target.kind == "immediate":
        settings += [("recovery_target", "immediate"), ("recovery_target_timeline", "current")]
    elif target.kind == "latest":
        settings += [("recovery_target_timeline", following)]
    else:
        settings += [("recovery_target_%s" % target.kind, target.value or ""),
                     ("recovery_target_timeline", following)]
    if target.kind != "latest":
        settings += [("recovery_target_action", "promote")]
    return settings


def render_settings(settings: Sequence[Tuple[str, str]], comment: str) -> str:
    lines = ["%s: %s" % (MARK, comment.replace("\n", " "))]
    lines += ["%s = %s" % (name, conf_quote(value)) for name, value in settings]
    return "\n".join(lines) + "\n"


def write_recovery(pgdata: str, settings: Sequence[Tuple[str, str]], comment: str) -> None:
    """Append the settings to postgresql.auto.conf (read last, so they win) and create recovery.signal."""
    path = os.path.join(pgdata, AUTO_CONF)
    try:
        with open(path, "rb") as handle:
            before = handle.read()
    except FileNotFoundError:
        before = b""
    before = _STALE.sub(rb"# \g<0>  # replaced below by seawall.pgbackup", before)
    if before and not before.endswith(b"\n"):
        before += b"\n"
    write_file_atomic(path, before + render_settings(settings, comment).encode("utf-8"), what=AUTO_CONF,
                      step="restore")
    write_file_atomic(os.path.join(pgdata, "recovery.signal"), b"", what="recovery.signal", step="restore")


# ---------------------------------------------------------------------- chains

def is_wal_link(backup: Backup) -> bool:
    """An incremental without a tar: the WAL archived since its parent (PostgreSQL 15/16), replayed by recovery."""
    return backup.kind == "incremental" and (backup.manifest.method == "wal" or backup.file("base") is None)


def chains(repo: Repository, selector: str = "latest", kind: Optional[str] = None) -> List[List[Backup]]:
    """The restorable chains (base first, then native incrementals), oldest first by end: every good base or
    incremental with all its parents good (``latest``), or the one chain of the backup ``selector`` names. A
    WAL-method link adds no data: its chain is its parents'."""
    if selector != "latest":
        chosen = repo.find(selector, kind=kind)
        return [_chain_of(repo, chosen, None)]
    # ``kind`` picks nothing here: the end of any chain may be the best start for a target
    good = present(repo.backups(kind="base") + repo.backups(kind="incremental"))
    by_id = {b.id: b for b in good}
    found: Dict[str, List[Backup]] = {}
    for backup in good:
        try:
            chain = _chain_of(repo, backup, by_id)
        except BackupError:
            continue  # a broken chain is never a start
        found[chain[-1].id] = chain
    return sorted(found.values(), key=lambda chain: (parse_lsn(chain[-1].manifest.stop_lsn or "0/0"),
                                                     chain[-1].created_at))


def _chain_of(repo: Repository, backup: Backup, by_id: Optional[Dict[str, Backup]]) -> List[Backup]:
    chain = [backup]
    while chain[0].kind == "incremental" and chain[0].manifest.parent:
        if len(chain) > 10000:
            raise RestoreError("%s: its chain of parents does not end" % backup.id)
        parent = chain[0].manifest.parent
        if by_id is not None:
            if parent not in by_id:
                raise NotFound("%s: parent %s is not a good backup" % (backup.id, parent))
            chain.insert(0, by_id[parent])
        else:
            chain.insert(0, repo.find(parent))
    if chain[0].kind != "base":
        raise RestoreError("%s is a %s backup: a data directory is rebuilt from a base backup or a chain"
                           % (backup.id, backup.kind))
    while len(chain) > 1 and is_wal_link(chain[-1]):
        chain.pop()  # its WAL is the archive's: recovery replays it
    check_chain(chain)
    return chain


def _end_time(backup: Backup) -> datetime:
    return backup.manifest.finished_at or backup.created_at


# ---------------------------------------------------------------------- reachability

@dataclass
class Reach:
    """What a target needs, decided from the catalog and the archive (reads only)."""

    target: Target
    chain: List[Backup]
    reached_lsn: str  # where the contiguous archive from the chain's start ends
    stop: Optional[WalRecord] = None  # the record recovery stops at (time, xid, name)
    timelines: List[int] = field(default_factory=list)
    scanned: int = 0  # WAL files read with pg_waldump
    wal_link: Optional[str] = None  # the WAL-method incremental restored (its parents' data, then its WAL)
    target_timeline: Optional[int] = None  # the timeline the archive was followed to (written, not 'latest')

    @property
    def backup(self) -> Backup:
        return self.chain[-1]

    def as_dict(self) -> Dict[str, Any]:
        return {"recovery_target": self.target.kind, "recovery_target_value": self.target.value,
                "recovery_target_text": self.target.describe(), "backup_id": self.backup.id,
                "chain": [b.id for b in self.chain], "archive_reaches_lsn": self.reached_lsn,
                "stop_lsn_in_archive": self.stop.lsn_text if self.stop else None,
                "stop_record": _describe_record(self.stop), "timelines": list(self.timelines),
                "wal_link": self.wal_link}


def _describe_record(record: Optional[WalRecord]) -> Optional[str]:
    if record is None:
        return None
    if record.kind == "restore_point":
        return "restore point %r at %s" % (record.name, record.lsn_text)
    if record.kind == "other":
        return "the record at %s" % record.lsn_text
    return "%s of xid %d at %s (%s)" % (record.kind, record.xid, record.lsn_text,
                                        iso(record.moment) if record.moment else "?")


class _Scanner:
    """Archived WAL files on the recovery path, fetched into scratch one by one and read with pg_waldump; the
    records of each file are kept, so a second question about the same file reads nothing again."""

    def __init__(self, archive: WalArchive, segments: List[Segment], tools: ClientTools, scratch: str) -> None:
        self.archive = archive
        self.segments = [s for s in segments if s.kind == "segment" and s.segno is not None]
        self.tools = tools
        self.scratch = scratch
        self.records: Dict[str, List[WalRecord]] = {}
        self.read = 0

    def path(self, reach: Continuity, start_lsn: str) -> List[Segment]:
        """The segments recovery replays from ``start_lsn`` to where the archive is contiguous (highest timeline
        of the path for each segment number, as recovery_target_timeline = 'latest' follows it)."""
        if not self.segments:
            return []
        size = segment_size_of(self.segments[0])
        first, end = parse_lsn(start_lsn) // size, parse_lsn(reach.reached_lsn) // size
        best: Dict[int, Segment] = {}
        for segment in self.segments:
            segno = segment.segno or 0
            if first <= segno < end and segment.timeline in reach.timelines:
                if segno not in best or segment.timeline > best[segno].timeline:
                    best[segno] = segment
        return [best[n] for n in sorted(best)]

    def of(self, segment: Segment, following: Optional[Segment]) -> List[WalRecord]:
        if segment.wal in self.records:
            return self.records[segment.wal]
        folder = os.path.join(self.scratch, "wal")
        os.makedirs(folder, 0o700, exist_ok=True)
        keep = [segment.wal]
        self._fetch(segment, folder)
        if following is not None and following.timeline == segment.timeline:
            self._fetch(following, folder)  # a record that crosses into it is read whole; read next anyway
            keep.append(following.wal)
        records, _end = dump(self.tools, folder, segment.wal)
        for name in os.listdir(folder):
            if name not in keep[1:]:
                os.unlink(os.path.join(folder, name))
        self.read += 1
        self.records[segment.wal] = records
        return records

    def stream_end(self, walk: Continuity) -> None:
        """When the walk ends in wal-receive's in-progress .partial (repo/walstream.py), it reaches where that
        file's valid records end (pg_waldump stops there and says where), not the end of its segment."""
        last = walk.last
        if last is None or not last.stored.startswith(STREAM + "/") or not last.stored.endswith(".partial"):
            return
        folder = os.path.join(self.scratch, "end")
        os.makedirs(folder, 0o700, exist_ok=True)
        try:
            self._fetch(last, folder)
            _records, error = dump(self.tools, folder, last.wal, limit=None)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        found = re.findall(r"\bat ([0-9A-F]{1,8}/[0-9A-F]{1,8})", error or "")
        if found and parse_lsn(walk.start_lsn) <= parse_lsn(found[-1]) < parse_lsn(walk.reached_lsn):
            walk.reached_lsn = format_lsn(parse_lsn(found[-1]))

    def _fetch(self, segment: Segment, folder: str) -> None:
        path = os.path.join(folder, segment.wal)
        if os.path.exists(path):
            return
        if not self.archive.fetch(segment.wal, path) and not (
                segment.stored.startswith(STREAM + "/") and copy_from_stream(self.archive.root, segment.wal, path)):
            raise RestoreError("WAL file %s vanished from the archive while it was read" % segment.wal)

    def at(self, path: List[Segment], lsn: int, every: bool = True, limit: Optional[int] = 1,
           start: Optional[int] = None, end: Optional[int] = None) -> List[WalRecord]:
        """Records of the segment of ``path`` that holds ``lsn`` (and of the next, for a record crossing into it),
        from ``start`` to ``end``; [] when the path has no such segment."""
        if not path:
            return []
        size = segment_size_of(path[0])
        index = next((i for i, s in enumerate(path) if s.segno == lsn // size), None)
        if index is None:
            return []
        segment = path[index]
        following = path[index + 1] if index + 1 < len(path) else None
        folder = os.path.join(self.scratch, "at")
        os.makedirs(folder, 0o700, exist_ok=True)
        try:
            self._fetch(segment, folder)
            last = None
            # pg_waldump wants an end location inside the last file it is given
            if end is None and following is not None and following.timeline == segment.timeline:
                self._fetch(following, folder)
                last = following.wal
            self.read += 1
            records, _end = dump(self.tools, folder, segment.wal, last, start_lsn=start, every=every, limit=limit,
                                 end_lsn=end)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return records

    def record_from(self, path: List[Segment], lsn: int) -> Optional[WalRecord]:
        """The first record at or after ``lsn`` in the archive: recovery to an LSN stops once it replayed it."""
        found = self.at(path, lsn, start=lsn)
        return found[0] if found else None

    def last_before(self, path: List[Segment], lsn: int) -> Optional[WalRecord]:
        """The last record that starts before ``lsn`` (looked for in a window growing back to its segment's
        start): recovery to it ends exactly there, without waiting for WAL after ``lsn``."""
        if not path or lsn <= 0:
            return None
        size = segment_size_of(path[0])
        floor = (lsn - 1) // size * size
        window = 64 * 1024
        while True:
            begin = max(floor, lsn - window)
            records = [r for r in self.at(path, lsn - 1, limit=None, start=begin, end=lsn) if r.lsn < lsn]
            if records or begin == floor:
                return records[-1] if records else None
            window *= 8

    def first(self, path: List[Segment], wanted, skip=None) -> Optional[WalRecord]:
        """The first record of ``path`` for which ``wanted(record)`` holds; ``skip(segment)``: not read."""
        for index, segment in enumerate(path):
            if skip is not None and skip(segment):
                continue
            following = path[index + 1] if index + 1 < len(path) else None
            for record in self.of(segment, following):
                if wanted(record):
                    return record
        return None


def check_reach(cfg: Config, repo: Repository, archive: WalArchive, target: Optional[Target],
                selector: str = "latest", kind: Optional[str] = None) -> Reach:
    """Choose the chain for ``target`` and prove the archive reaches it; a one-line RestoreError when it does not.
    Reads only (WAL files are fetched into the backup directory's scratch and removed). ``target`` None: the
    WAL-method incremental ``selector`` names, to its end."""
    candidates = chains(repo, selector, kind)
    # with wal-receive's stream (its completed files and .partial), which wal-fetch serves when the archive lacks them
    segments = with_stream(archive.root, archive.segments())
    link = None
    if target is None:  # a WAL-method link restored by its id: recovery to its end
        if selector == "latest" or not candidates:
            raise ConfigError("a recovery target is needed to restore %s with the WAL archive" % selector)
        link = repo.find(selector, kind=kind)
        target = _wal_link_target(cfg, archive, segments, link, candidates[-1])
    if not candidates:
        raise NotFound("no good base backup in %s to restore to %s from" % (repo.where, target.describe()))
    if target.kind == "immediate":
        chain = candidates[-1]
        return Reach(target, chain, chain[-1].manifest.stop_lsn or "0/0")
    # finished_at is the backup host's clock, commit times the server's: a host clock behind the server's is
    # caught by _reach_from when the commit after the target lies in the backup's own WAL.
    if target.kind == "time" and selector == "latest":
        before = [c for c in candidates if _end_time(c[-1]) < (target.moment or _end_time(c[-1]))]
        if not before:
            raise RestoreError("cannot restore to %s: no good base backup ended before it (the oldest ended at %s)"
                               % (target.describe(), iso(_end_time(candidates[0][-1]))))
        candidates = before
    elif target.kind == "time" and _end_time(candidates[-1][-1]) >= (target.moment or _end_time(candidates[-1][-1])):
        raise RestoreError("cannot restore to %s from %s: the backup ended at %s, after it"
                           % (target.describe(), candidates[-1][-1].id, iso(_end_time(candidates[-1][-1]))))
    if target.kind == "lsn":
        before = [c for c in candidates if parse_lsn(c[-1].manifest.stop_lsn or "0/0") <= (target.lsn or 0)]
        if not before:
            raise RestoreError("cannot restore to %s: %s the backup's consistent point %s"
                               % (target.describe(), "it is before" if selector != "latest" else
                                  "no good base backup ends before it; the oldest ends at",
                                  candidates[0][-1].manifest.stop_lsn))
        candidates = before
    major = max((c[-1].manifest.server.major if c[-1].manifest.server else 0) or 0 for c in candidates)
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's server", tools=("pg_waldump",))
    scratch = scratch_dir(cfg, "pitr")
    try:
        scanner = _Scanner(archive, segments, tools, scratch)
        if target.kind in ("xid", "name", "time"):
            reach = _reach_any(scanner, segments, candidates, target)
        else:  # the newest chain that may start it: an older one replays the same archive, only longer
            reach = _reach_from(scanner, segments, candidates[-1], target)
        reach.scanned = scanner.read
        reach.wal_link = link.id if link is not None else None
        return reach
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wal_link_target(cfg: Config, archive: WalArchive, segments: List[Segment], link: Backup,
                     chain: List[Backup]) -> Target:
    """The LSN target that ends recovery with the last record of a WAL-method link (its stop LSN is where its
    segment switch ended: the next record is in a segment that may not be archived yet)."""
    if not is_wal_link(link):
        raise ConfigError("%s is a %s backup: restoring it into a data directory needs no recovery target"
                          % (link.id, link.kind))
    stop = parse_lsn(link.manifest.stop_lsn or "0/0")
    data = chain[-1]
    major = (data.manifest.server.major if data.manifest.server else None) or 0
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's server", tools=("pg_waldump",))
    scratch = scratch_dir(cfg, "pitr")
    try:
        scanner = _Scanner(archive, segments, tools, scratch)
        walk = continuity(segments, data.manifest.stop_lsn or "0/0", data.manifest.timeline or 1)
        record = scanner.last_before(scanner.path(walk, data.manifest.stop_lsn or "0/0"), stop)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if record is None or record.lsn < parse_lsn(data.manifest.stop_lsn or "0/0"):
        raise RestoreError("cannot restore %s: the archive does not hold its WAL up to its stop LSN %s "
                           "(restore %s with a recovery target instead)" % (link.id, link.manifest.stop_lsn, data.id))
    return Target("lsn", record.lsn_text, lsn=record.lsn)


def _reach_from(scanner: _Scanner, segments: List[Segment], chain: List[Backup], target: Target) -> Reach:
    last = chain[-1]
    # The restored pg_wal holds the backup's own WAL (start to stop LSN); from there on recovery needs the archive.
    stop = start = last.manifest.stop_lsn or "0/0"
    timeline = last.manifest.timeline or 1
    walk = continuity(segments, start, timeline)
    path = scanner.path(walk, start)
    scanner.stream_end(walk)
    reached = walk.reached_lsn if parse_lsn(walk.reached_lsn) > parse_lsn(start) else None
    reach = Reach(target, chain, walk.reached_lsn, timelines=list(walk.timelines), target_timeline=walk.target_timeline)
    reaches = "the archive holds no WAL from %s (timeline %d) on" % (start, timeline) if reached is None else \
        "the archive reaches %s from %s (timeline %s)%s" % (
            walk.reached_lsn, start, ",".join(str(t) for t in walk.timelines) or timeline,
            ", then %s is missing" % walk.gaps[0] if walk.gaps else "")
    if target.kind == "latest":
        if walk.gaps:
            raise RestoreError("cannot restore to %s from %s: %s (restore to an LSN before the gap instead)"
                               % (target.describe(), last.id, reaches))
        return reach
    if target.kind == "lsn":
        if reached is None or parse_lsn(walk.reached_lsn) <= (target.lsn or 0):
            raise RestoreError("cannot restore to %s from %s: %s" % (target.describe(), last.id, reaches))
        found = scanner.record_from(path, target.lsn or 0)
        if found is None:  # e.g. right after a segment switch, before the next segment was archived
            raise RestoreError("cannot restore to %s from %s: %s, with no WAL record at or after it yet"
                               % (target.describe(), last.id, reaches))
        reach.stop = found
        return reach
    if target.kind == "time":
        moment = target.moment
        if moment is None:  # Target.parse gives every time target its moment
            raise RestoreError("%s: no time to restore to" % target.describe())

        # modified_at (the file's mtime) bounds the times of its records, as far as clocks agree: files completed
        # well before the target hold no later commit and are not read. A commit found is in the archive, so the
        # target is reached whatever the dates say; a refusal is decided only by reading every file.
        def after(record: WalRecord) -> bool:
            return record.kind in ("commit", "abort") and record.moment is not None and record.moment > moment

        # Recovery stops at the first commit after the target; one before the consistent point (the backup ran
        # past the target by the server's clock) makes PostgreSQL refuse to start: take an older chain instead.
        inside = scanner.first(_backup_span(scanner, last), lambda r: after(r) and r.lsn < parse_lsn(stop))
        found = inside or scanner.first(path, after, skip=lambda s: s.modified_at <= moment - MTIME_SLACK)
        if found is None:
            found = scanner.first(path, after)
        if found is None:
            raise RestoreError("cannot restore to %s from %s: %s, with no commit after that time (recovery would end "
                               "before the target)" % (target.describe(), last.id, reaches))
        if found.lsn < parse_lsn(stop):
            raise RestoreError("cannot restore to %s from %s: the commit at %s (%s) is after it and before the "
                               "backup's consistent point %s (the backup ended after the target by the server's "
                               "clock)" % (target.describe(), last.id, found.lsn_text,
                                           iso(found.moment) if found.moment else "?", stop))
        reach.stop = found
        return reach
    if target.kind == "xid":
        found = scanner.first(path, lambda r: r.kind in ("commit", "abort") and r.xid == target.xid)
        what = "no commit or abort of that xid"
    else:
        found = scanner.first(path, lambda r: r.kind == "restore_point" and r.name == target.value)
        what = "no restore point of that name"
    if found is None:
        raise RestoreError("cannot restore to %s from %s: %s, with %s" % (target.describe(), last.id, reaches, what))
    if found.lsn < parse_lsn(stop):
        raise RestoreError("cannot restore to %s from %s: it is at %s, before the backup's consistent point %s"
                           % (target.describe(), last.id, found.lsn_text, stop))
    reach.stop = found
    return reach


def _backup_span(scanner: _Scanner, backup: Backup) -> List[Segment]:
    """The archived files of the backup's own WAL (start to stop LSN, its timeline); [] when not archived."""
    if not scanner.segments:
        return []
    size = segment_size_of(scanner.segments[0])
    first = parse_lsn(backup.manifest.start_lsn or backup.manifest.stop_lsn or "0/0") // size
    last = parse_lsn(backup.manifest.stop_lsn or "0/0") // size
    timeline = backup.manifest.timeline or 1
    return sorted((s for s in scanner.segments if s.timeline == timeline and first <= (s.segno or 0) <= last),
                  key=lambda s: s.segno or 0)


def _reach_any(scanner: _Scanner, segments: List[Segment], candidates: List[List[Backup]],
               target: Target) -> Reach:
    """For time, xid and name targets: the newest chain that ends before the record; older chains are tried when
    the record lies inside a newer one or before it."""
    error: Optional[RestoreError] = None
    for chain in reversed(candidates):
        try:
            return _reach_from(scanner, segments, chain, target)
        except RestoreError as exc:
            error = error or exc
    raise error or RestoreError("cannot restore to %s: no backup to start from" % target.describe())


# ---------------------------------------------------------------------- the restore

def plan_point_in_time(cfg: Config, target: Optional[Target], selector: str = "latest", kind: Optional[str] = None,
                       destination: Optional[str] = None) -> Reach:
    """The chain and what the archive reaches for ``target`` (check mode, and the first step of the restore)."""
    repo = open_repository(cfg, destination)
    archive = WalArchive(cfg, destination)
    try:
        return check_reach(cfg, repo, archive, target, selector, kind)
    finally:
        archive.close()
        repo.close()


def plan_point_in_time_directory(cfg: Config, selector: str, pgdata: str, target: Optional[Target],
                                 kind: Optional[str] = None, destination: Optional[str] = None) -> Dict[str, Any]:
    """What ``restore_point_in_time`` would do (check mode, diff): the chain the target starts from, and
    ``skip_reason`` when the directory already holds its last backup (idempotence on backup_label). Raises like
    the run would for a target the archive does not reach or a directory neither absent nor empty. Reads only."""
    pgdata = os.path.abspath(pgdata)
    reach = plan_point_in_time(cfg, target, selector, kind, destination)
    host_command()  # the restore_command the run would write must be runnable here (check mode says so too)
    held = restored_label(pgdata) if os.path.isdir(pgdata) else None
    skip = None
    if held == reach.backup.id:
        skip = "%s already holds %s (restored earlier)" % (pgdata, reach.backup.id)
    else:
        check_empty_target(pgdata)
    return {"backup": reach.backup, "pgdata": pgdata, "restored_before": held, "skip_reason": skip, "reach": reach}


def restore_point_in_time(cfg: Config, selector: str, pgdata: str, target: Optional[Target],
                          kind: Optional[str] = None, destination: Optional[str] = None,
                          config_file: Optional[str] = None) -> Dict[str, Any]:
    """Rebuild ``pgdata`` (absent or empty) for recovery to ``target``; refused before it is touched when the
    archive cannot reach the target. The server recovers when started (restore_command: our wal-fetch).
    ``target`` None: ``selector`` names a WAL-method incremental, restored to its end."""
    pgdata = os.path.abspath(pgdata)
    check_empty_target(pgdata)
    repo = open_repository(cfg, destination)
    archive = WalArchive(cfg, destination)
    log = RunLog(Repository(cfg.backup_dir).log_dir)
    started = time.monotonic()
    try:
        reach = check_reach(cfg, repo, archive, target, selector, kind)
        target = reach.target
        fetch = restore_command(cfg, config_file)
        settings = recovery_settings(target, fetch, reach.target_timeline, recovery_end_command(cfg))
        comment = "%s to %s" % (reach.backup.id, target.describe())
        try:
            with contextlib.ExitStack() as stack:
                local = [stack.enter_context(repo.local_copy(link)) for link in reach.chain]
                result = restore_pgdata(cfg, local, pgdata,
                                        finish=lambda where: write_recovery(where, settings, comment))
        except BackupError as exc:
            log.failure("restore-failed", id=reach.backup.id, target=pgdata, step=exc.step, error=str(exc),
                        recovery_target=target.describe())
            raise
    finally:
        archive.close()
        repo.close()
    result.update(reach.as_dict())
    result["restore_command"] = fetch
    result["seconds"] = round(time.monotonic() - started, 3)
    log.info("restore-ok", id=reach.backup.id, target=pgdata, seconds=result["seconds"],
             recovery_target=reach.target.describe())
    return result
