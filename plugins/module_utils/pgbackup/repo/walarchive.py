# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive: the files PostgreSQL's archive_command hands over, kept in ``wal/`` (docs/wal.md).

Each archived file is a data object ``wal/<walname>-<d16>.<gz|zst|raw>[.enc|.age]`` (compressed, then encrypted
like the ``base`` kind, bound to repository, ``"wal"`` and the object's name) and a record
``wal/<walname>-<d16>.json`` written after it: a record's presence means the data is complete. ``d16`` is the
first 16 hex digits of the raw file's sha256, so the same content always has the same keys (a re-push is a
no-op) and a different file under an archived name is seen before anything is written.

A record is signed like a manifest (codec/authn.Trust): a planted or edited record, or one that names another
repository, is not trusted, and a trusted record pins the sha256 of the stored and of the raw bytes, so a
swapped, replayed or downgraded data object is refused on fetch. WAL is not a backup kind: the catalog's kind
folders never include ``wal/``, and nothing here takes the repository lock (archive_command must never wait).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

from ..codec.authn import Trust, Untrusted, render_manifest
from ..codec.compression import compressor, decompressing_reader
from ..codec.crypto import AES_MODE, AuthenticationFailed, Binding
from ..codec.stored import Sealing, StoredWriter, decrypting_reader, sealing_for
from ..core.clock import is_future, iso, parse_iso, utc_now
from ..core.errors import BackupError, ConfigError, DestinationError, VerifyError
from ..core.fsutil import (check_private_dir, create_private, ensure_private_dir, fsync_dir, open_read_nofollow,
                           remove_quietly, write_file_atomic)
from ..core.testpoints import pause
from ..model.manifest import Backup
from ..store import LocalStore, ObjectInfo, Store, find_settings, open_destination, remote_settings
from .catalog import open_repository

FOLDER = "wal"
FORMAT = 1
BINDING_ID = "wal"  # the binding's "backup id" of every WAL data object
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
RECORD_LIMIT = 64 * 1024
CHUNK = 1 << 20

SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
PARTIAL_NAME = re.compile(r"^[0-9A-F]{24}\.partial$")
HISTORY_NAME = re.compile(r"^[0-9A-F]{8}\.history$")
BACKUP_NAME = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
_WAL = r"(?P<wal>[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)"
RECORD_KEY = re.compile(r"^%s/%s-(?P<d16>[0-9a-f]{16})\.json$" % (FOLDER, _WAL))
DATA_KEY = re.compile(r"^%s/%s-(?P<d16>[0-9a-f]{16})\.(?:gz|zst|raw)(?:\.enc|\.age)?$" % (FOLDER, _WAL))
# temp names of our writes: records and data objects here (write_file_atomic's), a LocalStore's at a destination
_ANY_WAL = _WAL.replace("?P<wal>", "?:")
TEMP_KEY = re.compile(r"^%s/(?:\.%s-[0-9a-f]{16}\.[a-z.]+\.[0-9]+-[0-9a-f]+\.tmp|%s-[0-9a-f]{16}\.[a-z.]+\.partial)$"
                      % (FOLDER, _ANY_WAL, _ANY_WAL))
DATA_SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ".raw"}
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def kind_of(walname: str) -> str:
    """``segment``, ``partial``, ``history`` or ``backup``; ConfigError for any other name."""
    for kind, pattern in (("segment", SEGMENT_NAME), ("partial", PARTIAL_NAME), ("history", HISTORY_NAME),
                          ("backup", BACKUP_NAME)):
        if pattern.match(walname or ""):
            return kind
    raise ConfigError("%r is not a WAL file name (a segment, .partial, .history or .backup file): refused"
                      % str(walname)[:80])


# ---------------------------------------------------------------------- LSNs and segment names

def parse_lsn(lsn: str) -> int:
    match = _LSN.match(str(lsn or "").strip())
    if not match:
        raise ConfigError("%r is not an LSN (like 0/3000028)" % str(lsn)[:40])
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def lsn_to_segno(lsn: str, seg_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The absolute number of the segment holding ``lsn``."""
    return parse_lsn(lsn) // seg_size


def wal_name(timeline: int, segno: int, seg_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """PostgreSQL's file name of segment ``segno`` on ``timeline`` (XLogFileName)."""
    per_id = 0x100000000 // seg_size
    return "%08X%08X%08X" % (timeline, segno // per_id, segno % per_id)


def _valid_segment_size(size: int) -> bool:
    # initdb --wal-segsize: a power of two from 1 MiB to 1 GiB
    return (1 << 20) <= size <= (1 << 30) and size & (size - 1) == 0


def segno_of(walname: str, seg_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    per_id = 0x100000000 // seg_size
    return int(walname[8:16], 16) * per_id + int(walname[16:24], 16)


@dataclass(frozen=True)
class Segment:
    """One archived WAL file, as its trusted record describes it."""

    wal: str                # PostgreSQL's file name
    timeline: int
    segno: Optional[int]    # absolute segment number (segment and .partial files), else None
    digest: str             # sha256 of the raw file
    size: int               # raw size
    stored: str             # the data object's name (in wal/)
    record: str             # the record object's name (in wal/)
    modified_at: datetime
    archived_at: datetime
    kind: str               # segment | partial | history | backup
    # a .history file's switch points: ((parent timeline, switch LSN), ...), oldest first
    history: Tuple[Tuple[int, str], ...] = field(default=())
    stored_sha256: str = ""
    stored_size: int = -1
    compression: str = "none"
    encryption: Optional[Dict[str, Any]] = field(default=None, compare=False, hash=False)


def segment_size_of(segment: Segment) -> int:
    """The server's WAL segment size as a segment shows it (its raw size); 16 MiB when it cannot tell."""
    if segment.kind in ("segment", "partial") and _valid_segment_size(segment.size):
        return segment.size
    return DEFAULT_SEGMENT_SIZE


def parse_history(data: bytes) -> Tuple[Tuple[int, str], ...]:
    """The (parent timeline, switch LSN) lines of a timeline history file, in file order."""
    found = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        try:
            found.append((int(fields[0]), format_lsn(parse_lsn(fields[1]))))
        except (ValueError, ConfigError):
            continue
    return tuple(found)


# ---------------------------------------------------------------------- continuity

@dataclass
class Continuity:
    """How far the archive replays without a hole from a start LSN (docs/wal.md)."""

    start_lsn: str
    reached_lsn: str                       # end of the last contiguous segment (start_lsn when none)
    last: Optional[Segment] = None
    gaps: List[str] = field(default_factory=list)  # missing WAL file names before the newest archived one
    timelines: List[int] = field(default_factory=list)
    target_timeline: int = 1

    def reaches(self, lsn: str) -> bool:
        return parse_lsn(self.reached_lsn) >= parse_lsn(lsn)


def _timeline_path(segments: List[Segment], timeline: int, start: int) -> List[Tuple[int, int]]:
    """[(timeline, first LSN on it)] from ``timeline`` to the newest timeline descending from it after ``start``
    (recovery_target_timeline = 'latest'), following the archived .history files."""
    histories = {s.timeline: s.history for s in segments if s.kind == "history"}
    best: List[Tuple[int, int]] = [(timeline, start)]
    for target in sorted(histories, reverse=True):
        if target <= timeline:
            continue
        entries = histories[target]
        path: List[Tuple[int, int]] = []
        begin = None
        for parent, switch in entries:
            if begin is None and parent != timeline:
                continue
            path.append((parent, start if begin is None else begin))
            begin = parse_lsn(switch)
        if not path or path[0][0] != timeline or begin is None:
            continue
        if parse_lsn(entries[[p for p, _s in entries].index(timeline)][1]) < start:
            continue  # the branch left this timeline before the start: not reachable from it
        path.append((target, begin))
        best = path
        break
    return best


def continuity(segments: List[Segment], start_lsn: str, timeline: int, until_lsn: Optional[str] = None,
               seg_size: Optional[int] = None) -> Continuity:
    """Walk the archive from ``start_lsn`` on ``timeline`` segment by segment, switching timelines where the
    archived .history files say (as recovery with recovery_target_timeline = 'latest' does).

    ``reached_lsn``: the end of the last segment of the unbroken run (with ``until_lsn``, the walk stops after the
    segment holding it); ``gaps``: the names missing between there and the newest archived segment on the path
    (with ``until_lsn``: and no further than the segment holding it). ``seg_size``: the server's WAL segment size
    (default: as the archived segments show it, else 16 MiB)."""
    start = parse_lsn(start_lsn)
    files = [s for s in segments if s.kind == "segment" and s.segno is not None]
    if seg_size is None:
        seg_size = segment_size_of(files[0]) if files else DEFAULT_SEGMENT_SIZE
    path = _timeline_path(segments, timeline, start)
    begins = [(tli, begin // seg_size) for tli, begin in path]

    def timeline_for(segno: int) -> int:
        chosen = begins[0][0]
        for tli, first in begins:
            if first <= segno:
                chosen = tli
        return chosen

    have: Dict[Tuple[int, int], Segment] = {(s.timeline, s.segno): s for s in files}  # type: ignore[misc]
    segno = start // seg_size
    until = parse_lsn(until_lsn) if until_lsn else None
    result = Continuity(start_lsn=format_lsn(start), reached_lsn=format_lsn(start), target_timeline=path[-1][0])
    while True:
        if until is not None and result.last is not None and segno * seg_size > until:
            break  # the segment holding the target is in
        tli = timeline_for(segno)
        found = have.get((tli, segno))
        if found is None:
            break
        result.last = found
        result.reached_lsn = format_lsn((segno + 1) * seg_size)
        if tli not in result.timelines:
            result.timelines.append(tli)
        segno += 1
    later = [s.segno for s in files if s.segno is not None and s.segno >= segno
             and s.timeline == timeline_for(s.segno)]
    if later:
        newest = max(later)
        if until is not None:
            newest = min(newest, until // seg_size)
        result.gaps = [wal_name(timeline_for(n), n, seg_size) for n in range(segno, newest + 1)
                       if (timeline_for(n), n) not in have]
    return result


# ---------------------------------------------------------------------- the archive

def _iso_utc(moment: datetime) -> str:
    return iso(moment.astimezone(timezone.utc))


class _HashingReader:
    """Reads through ``raw`` and hashes/counts what passes (the stored bytes of a data object). A rewind to the
    start is served from the bytes already read (the aes reader reads its header, then rewinds)."""

    REPLAY = 64 * 1024

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self._head = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._pos < self.size:
            if self._pos >= len(self._head):
                raise OSError("cannot replay past the start of the stream")
            end = len(self._head) if n is None or n < 0 else min(len(self._head), self._pos + n)
            data = self._head[self._pos:end]
            self._pos = end
            return data
        data = self._raw.read(n)
        self.digest.update(data)
        self.size += len(data)
        self._pos += len(data)
        if len(self._head) < self.REPLAY:
            self._head += data[:self.REPLAY - len(self._head)]
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset != 0 or whence != 0 or self.size > len(self._head):
            raise OSError("only a rewind near the start is supported")
        self._pos = 0
        return 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    @property
    def closed(self) -> bool:
        return getattr(self._raw, "closed", False)

    def close(self) -> None:
        self._raw.close()

    def drain(self) -> None:
        """Read (and hash) the stored bytes to their end."""
        self._pos = self.size
        while self.read(CHUNK):
            pass


class WalArchive:
    """The ``wal/`` folder of the backup directory, or of the destination named ``destination``."""

    def __init__(self, cfg: Any, destination: Optional[str] = None, trust: Optional[Trust] = None) -> None:
        self.cfg = cfg
        self.destination = destination
        self.trust = trust or Trust.from_config(cfg)
        self.repository = self.trust.repository or "default"
        if destination:
            self.store: Store = open_destination(find_settings(cfg, destination))
            self.root: Optional[str] = None
        else:
            self.root = os.path.abspath(cfg.backup_dir)
            self.store = LocalStore("backups", self.root, role="backup directory")
        self.where = self.root or "destination %r (%s)" % (self.store.name, self.store.uri())
        self._refused: List[Tuple[str, str]] = []

    # ------------------------------------------------------------------ reading records

    def _objects(self) -> List[ObjectInfo]:
        if self.root is not None:
            if not os.path.lexists(self.root):
                return []
            check_private_dir(self.root, follow=True)
            folder = os.path.join(self.root, FOLDER)
            if os.path.islink(folder):
                raise ConfigError("%s is a symbolic link: refusing to follow it" % folder)
        return [info for info in self.store.list(FOLDER + "/") if info.key.count("/") == 1]

    def _record(self, store: Store, key: str) -> Segment:
        """The segment a record object describes (Untrusted when it is not to be trusted here)."""
        match = RECORD_KEY.match(key)
        if not match:
            raise Untrusted("is not named as a WAL record")
        try:
            data = store.read_bytes(key, limit=RECORD_LIMIT)
        except DestinationError as exc:
            raise Untrusted("cannot be read: %s" % (getattr(exc, "detail", None) or exc)) from None
        return self._parse(data, match.group("wal"), match.group("d16"), key)

    def _parse(self, data: bytes, walname: str, d16: str, key: str) -> Segment:
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Untrusted("is not valid JSON") from None
        if not isinstance(document, dict):
            raise Untrusted("is not a JSON object")
        self.trust.check_document(data, document)
        try:
            if document["format"] != FORMAT:
                raise Untrusted("has format %r, this version reads %d" % (document["format"], FORMAT))
            stored = document["stored"]
            if document["wal"] != walname or not str(document["sha256"]).startswith(d16):
                raise Untrusted("describes %s (sha256 %s...), not the file its name says"
                                % (str(document["wal"])[:40], str(document["sha256"])[:16]))
            name = str(stored["name"])
            if not DATA_KEY.match(FOLDER + "/" + name) or not name.startswith("%s-%s." % (walname, d16)):
                raise Untrusted("names data object %r, not one of its own" % name[:80])
            compression = str(stored["compression"])
            if DATA_SUFFIX.get(compression) != "." + name[len(walname) + 18:].split(".")[0]:
                raise Untrusted("names compression %r, its data object's name another" % compression[:20])
            encryption = stored.get("encryption") or None
            if self.trust.active and self.trust.encrypted_kinds and "base" in self.trust.encrypted_kinds:
                self._check_policy(encryption)
            raw_size, stored_size = int(document["size"]), int(stored["size"])
            kind = kind_of(walname)
            history = tuple((int(t), format_lsn(parse_lsn(s))) for t, s in document.get("history") or [])
            segment = Segment(
                wal=walname, timeline=int(walname[:8], 16), segno=None, digest=str(document["sha256"]),
                size=raw_size, stored=name, record=key.rsplit("/", 1)[-1],
                modified_at=parse_iso(document["modified_at"]), archived_at=parse_iso(document["archived_at"]),
                kind=kind, history=history, stored_sha256=str(stored["sha256"]), stored_size=stored_size,
                compression=compression, encryption=dict(encryption) if encryption else None)
        except Untrusted:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
            raise Untrusted("is not a valid WAL record (%s)" % str(exc)[:80]) from None
        if kind in ("segment", "partial"):
            segment = _with_segno(segment)
        return segment

    def _check_policy(self, encryption: Optional[Dict[str, Any]]) -> None:
        """As Trust.check_policy for backups: with ``base`` encrypted, a WAL object must be, under our keys."""
        if self.trust.accept_unencrypted:
            return
        if not encryption:
            raise Untrusted("is not encrypted, but encryption is configured for base backups and WAL (trust it "
                            "explicitly: BACKUP_ACCEPT_UNENCRYPTED=true)")
        if encryption.get("algorithm") == AES_MODE:
            if encryption.get("key_id") not in self.trust.aes_ids:
                raise Untrusted("is encrypted under key id %s, which is not in the keyring"
                                % encryption.get("key_id"), missing_key=str(encryption.get("key_id")))
        elif not set(encryption.get("key_ids") or [encryption.get("key_id")]) & self.trust.age_ids:
            raise Untrusted("is encrypted to age key ids none of which is configured here")

    def _records_of(self, store: Store, walname: str,
                    objects: Optional[List[ObjectInfo]] = None) -> Tuple[List[Segment], List[Tuple[str, str]]]:
        """(trusted segments, refused (key, reason)) of the records of ``walname`` in ``store``."""
        prefix = "%s/%s-" % (FOLDER, walname)
        listed = objects if objects is not None else store.list(prefix)
        good: List[Segment] = []
        bad: List[Tuple[str, str]] = []
        for info in listed:
            match = RECORD_KEY.match(info.key)
            if not match or match.group("wal") != walname:
                continue
            try:
                good.append(self._record(store, info.key))
            except Untrusted as exc:
                bad.append((info.key, exc.reason))
        return good, bad

    def segments(self) -> List[Segment]:
        """Every archived file with a trusted record, sorted by (timeline, segno, name); see ``refused()``."""
        found: List[Segment] = []
        self._refused = []
        for info in self._objects():
            if not RECORD_KEY.match(info.key):
                continue
            try:
                found.append(self._record(self.store, info.key))
            except Untrusted as exc:
                self._refused.append((info.key, exc.reason))
        found.sort(key=lambda s: (s.timeline, s.segno if s.segno is not None else -1, s.wal))
        return found

    def refused(self) -> List[Tuple[str, str]]:
        """(record key, why) of the records ``segments()`` skipped (call it first)."""
        return list(self._refused)

    # ------------------------------------------------------------------ push

    def _sealing(self) -> Optional[Sealing]:
        if not self.cfg.encryption_for("base"):
            return None
        return sealing_for(self.cfg, self.trust.ring)

    def push(self, path: str) -> Dict[str, Any]:
        """Archive the file at ``path`` here and at every destination (archive_command). Idempotent for the same
        content; VerifyError, before anything is written, for another file under an archived name."""
        if self.destination:
            raise BackupError("wal-push writes to the backup directory (and from there to every destination)",
                              step="wal-push")
        walname = os.path.basename(path)
        kind = kind_of(walname)
        try:
            st = os.stat(path)
            with open_read_nofollow(path) as handle:
                digest = hashlib.sha256()
                size = 0
                head = b""
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk:
                        break
                    if kind == "history" and len(head) < RECORD_LIMIT:
                        head += chunk[:RECORD_LIMIT - len(head)]
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise BackupError("cannot read WAL file %s: %s" % (path, exc.strerror or exc), step="wal-push") from None
        sha = digest.hexdigest()
        ensure_private_dir(self.root or "", follow=True)
        folder = os.path.join(self.root or "", FOLDER)
        ensure_private_dir(folder)
        self.trust.require_signer()
        good, _bad = self._records_of(self.store, walname)
        other = [s for s in good if s.digest != sha]
        if other:
            raise VerifyError("WAL file %s differs from the one already archived under that name (sha256 %s..., "
                              "archived %s...): refusing to replace it; another server archives into %s?"
                              % (walname, sha[:16], other[0].digest[:16], self.where))
        same = [s for s in good if s.digest == sha]
        result: Dict[str, Any] = {"wal": walname, "sha256": sha, "size": size, "destinations": []}
        present = same and self._data_intact(self.store, same[0])
        if present:
            segment = same[0]
            result["result"] = "already archived"
        else:
            segment = self._write_local(path, walname, kind, sha, size, st, head)
            result["result"] = "pushed"
        result["stored"] = segment.stored
        errors = []
        for settings in remote_settings(self.cfg):
            try:
                result["destinations"].append(self._upload(settings, segment))
            except BackupError as exc:
                errors.append(exc)
        if errors:
            first = errors[0]
            raise DestinationError("WAL file %s is archived in %s but not at %d destination%s: %s"
                                   % (walname, self.where, len(errors), "" if len(errors) == 1 else "s",
                                      str(first)))
        return result

    def _data_intact(self, store: Store, segment: Segment) -> bool:
        info = store.stat("%s/%s" % (FOLDER, segment.stored))
        return info is not None and info.size == segment.stored_size

    def _write_local(self, path: str, walname: str, kind: str, sha: str, size: int, st: os.stat_result,
                     head: bytes) -> Segment:
        algorithm = self.cfg.compression_for("base")
        sealing = self._sealing()
        d16 = sha[:16]
        stored_name = "%s-%s%s%s" % (walname, d16, DATA_SUFFIX[algorithm], sealing.suffix if sealing else "")
        folder = os.path.join(self.root or "", FOLDER)
        target = os.path.join(folder, stored_name)
        temp = os.path.join(folder, ".%s.%d-%s.tmp" % (stored_name, os.getpid(), secrets.token_hex(4)))
        raw = hashlib.sha256()
        raw_size = 0
        writer = None
        try:
            with create_private(temp) as out, open_read_nofollow(path) as source:
                writer = StoredWriter(out, temp, "wal-push", sealing, Binding(self.repository, BINDING_ID, stored_name))
                packer = compressor(algorithm, self.cfg.compression_level)
                while True:
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    raw.update(chunk)
                    raw_size += len(chunk)
                    writer.write(packer.compress(chunk))
                writer.write(packer.flush())
                writer.close()
                out.flush()
                os.fsync(out.fileno())
            if raw.hexdigest() != sha or raw_size != size:
                raise BackupError("WAL file %s changed while it was archived: not archived" % path, step="wal-push")
            pause("wal-push-data")  # crash tests: the data is written under its temp name
            stored_sha, stored_size = self._install(temp, target, (writer.sha256, writer.size), Segment(
                wal=walname, timeline=int(walname[:8], 16), segno=None, digest=sha, size=size, stored=stored_name,
                record="", modified_at=utc_now(), archived_at=utc_now(), kind=kind, compression=algorithm,
                encryption=sealing.record() if sealing else None))
            fsync_dir(folder)
        except OSError as exc:
            if writer is not None:
                writer.abort()
            remove_quietly(temp)
            raise BackupError("cannot archive WAL file %s into %s: %s" % (walname, folder, exc.strerror or exc),
                              step="wal-push") from None
        except BaseException:
            if writer is not None:
                writer.abort()
            remove_quietly(temp)
            raise
        pause("wal-push-record")  # crash tests: the data object is in place, its record is not
        document: Dict[str, Any] = {
            "format": FORMAT, "repository": self.repository, "wal": walname, "sha256": sha, "size": size,
            "stored": {"name": stored_name, "sha256": stored_sha, "size": stored_size, "compression": algorithm,
                       "encryption": sealing.record() if sealing else None},
            "modified_at": _iso_utc(datetime.fromtimestamp(st.st_mtime, timezone.utc)),
            "archived_at": _iso_utc(utc_now())}
        if kind == "history":
            document["history"] = [[t, s] for t, s in parse_history(head)]
        data = render_manifest(self.trust.sign_document(document))
        record_key = "%s/%s-%s.json" % (FOLDER, walname, d16)
        write_file_atomic(os.path.join(folder, record_key.rsplit("/", 1)[-1]), data, what="WAL record",
                          step="wal-push")
        return self._parse(data, walname, d16, record_key)

    def _install(self, temp: str, target: str, mine: Tuple[str, int], segment: Segment) -> Tuple[str, int]:
        """Move the data object written at ``temp`` to ``target`` without replacing one already there, and return
        the (sha256, size) of the stored bytes now at ``target``. Encrypted bytes differ from push to push: when
        two pushes of one file run at once, replacing the other's object after it wrote its record would leave a
        record naming other bytes. An object already there that decodes to this file is kept (the other push's,
        or a killed push's); one that does not (damaged) is replaced."""
        for _attempt in range(3):
            try:
                os.link(temp, target)
            except FileExistsError:
                pass
            except OSError:  # no hard links here (some Windows file systems): the plain rename
                os.replace(temp, target)
                return mine
            else:
                remove_quietly(temp)
                return mine
            try:
                digest = hashlib.sha256()
                with open_read_nofollow(target) as handle:
                    for chunk in iter(lambda: handle.read(CHUNK), b""):
                        digest.update(chunk)
                    there = (digest.hexdigest(), handle.tell())
            except FileNotFoundError:
                continue  # removed meanwhile (a damaged one, by another push): link again
            except OSError:
                there = ("", -1)  # a symbolic link or unreadable: never ours, replaced
            if there[1] >= 0 and self.check_data(replace(segment, stored_sha256=there[0],
                                                         stored_size=there[1])) is None:
                try:
                    os.utime(target)  # young again: cleanup, which looks again before removing orphans, keeps it
                except FileNotFoundError:
                    continue  # removed meanwhile (cleanup of an old orphan): link ours
                remove_quietly(temp)
                return there
            remove_quietly(target)
        os.replace(temp, target)
        return mine

    def _upload(self, settings, segment: Segment) -> Dict[str, Any]:
        """The data object, then the record, at one destination; a no-op when it has them already."""
        store = open_destination(settings)
        try:
            good, _bad = self._records_of(store, segment.wal)
            other = [s for s in good if s.digest != segment.digest]
            if other:
                raise VerifyError("destination %r already holds another WAL file %s (sha256 %s...): not replaced"
                                  % (settings.name, segment.wal, other[0].digest[:16]))
            data_key = "%s/%s" % (FOLDER, segment.stored)
            if any(s.digest == segment.digest for s in good) and self._data_intact(store, segment):
                return {"name": settings.name, "result": "already archived", "uri": store.uri(data_key)}
            local = os.path.join(self.root or "", FOLDER, segment.stored)
            store.put_file(data_key, local, segment.stored_size, segment.stored_sha256)
            with open_read_nofollow(os.path.join(self.root or "", FOLDER, segment.record)) as handle:
                record = handle.read(RECORD_LIMIT + 1)
            store.put_bytes("%s/%s" % (FOLDER, segment.record), record)
            return {"name": settings.name, "result": "pushed", "uri": store.uri(data_key)}
        except OSError as exc:
            raise DestinationError("destination %r: cannot upload WAL file %s: %s"
                                   % (settings.name, segment.wal, exc.strerror or exc)) from None
        finally:
            store.close()

    # ------------------------------------------------------------------ fetch

    def fetch(self, walname: str, dest_path: str) -> bool:
        """Write the archived ``walname`` to ``dest_path`` (restore_command): from here, else from the first
        destination that has it. False when it is archived nowhere; VerifyError when a record or the data does
        not verify (nothing is written then)."""
        kind_of(walname)
        refusals: List[str] = []
        if self.root is None or os.path.isdir(os.path.join(self.root, FOLDER)):
            if self.root is not None:
                check_private_dir(self.root, follow=True)
            if self._fetch_from(self.store, walname, dest_path, refusals):
                return True
        if not self.destination:
            for settings in remote_settings(self.cfg):
                try:
                    store = open_destination(settings)
                except BackupError as exc:
                    refusals.append(str(exc))
                    continue
                try:
                    if self._fetch_from(store, walname, dest_path, refusals):
                        return True
                except DestinationError as exc:
                    refusals.append(str(exc))
                finally:
                    store.close()
        if refusals:
            raise VerifyError("WAL file %s: %s" % (walname, "; ".join(refusals)))
        return False

    def _fetch_from(self, store: Store, walname: str, dest_path: str, refusals: List[str]) -> bool:
        good, bad = self._records_of(store, walname)
        where = self.where if store is self.store else "destination %r" % store.name
        refusals.extend("record %s in %s %s" % (key.rsplit("/", 1)[-1], where, why) for key, why in bad)
        if len({s.digest for s in good}) > 1:
            refusals.append("%s holds %d different files under that name" % (where, len({s.digest for s in good})))
            return False
        if not good:
            return False
        segment = good[0]
        try:
            self._restore_object(store, segment, dest_path)
        except VerifyError as exc:
            refusals.append("in %s: %s" % (where, exc))
            return False
        return True

    def open_raw(self, store: Store, segment: Segment) -> Tuple[BinaryIO, _HashingReader]:
        """The raw bytes of an archived file (decrypted, decompressed) and the hasher of its stored bytes."""
        label = "WAL file %s" % segment.wal
        key = "%s/%s" % (FOLDER, segment.stored)
        try:
            raw = store.open(key)
        except DestinationError as exc:
            raise VerifyError("%s: data object %s is missing or unreadable (%s)"
                              % (label, segment.stored, getattr(exc, "detail", None) or exc)) from None
        hashing = _HashingReader(raw)
        try:
            stream = decrypting_reader(hashing, segment.encryption, self.trust.ring or _ring(self.cfg), label,
                                       BINDING_ID, Binding(self.repository, BINDING_ID, segment.stored))
        except AuthenticationFailed as exc:
            hashing.close()
            raise VerifyError(str(exc)) from None
        except BaseException:
            hashing.close()
            raise
        return decompressing_reader(stream, segment.compression), hashing

    def _read_checked(self, store: Store, segment: Segment, out: Optional[_Sink] = None) -> None:
        """Read a data object through (its raw bytes to ``out``); VerifyError unless the stored and the raw bytes
        are the ones its record names (decoding errors of damaged bytes propagate)."""
        reader, hashing = self.open_raw(store, segment)
        digest = hashlib.sha256()
        size = 0
        with reader:
            for chunk in iter(lambda: _decoded(reader), b""):
                digest.update(chunk)
                size += len(chunk)
                if out is not None:
                    out.write(chunk)
            hashing.drain()  # the stored bytes to their end (a decoder may stop reading early)
        if (hashing.digest.hexdigest(), hashing.size) != (segment.stored_sha256, segment.stored_size):
            raise VerifyError("data object %s does not match its record (stored sha256 or size)" % segment.stored)
        if (digest.hexdigest(), size) != (segment.digest, segment.size):
            raise VerifyError("data object %s decodes to other bytes than its record names" % segment.stored)

    def _restore_object(self, store: Store, segment: Segment, dest_path: str) -> None:
        dest_path = os.path.abspath(dest_path)
        folder = os.path.dirname(dest_path)
        temp = os.path.join(folder, ".%s.%d-%s.tmp" % (os.path.basename(dest_path), os.getpid(),
                                                       secrets.token_hex(4)))
        try:
            with create_private(temp) as out:
                sink = _Sink(out)
                self._read_checked(store, segment, sink)
                sink.finish()
            os.replace(temp, dest_path)
        except _WriteFailed as exc:  # pg_wal full or failing: not the archive's fault
            remove_quietly(temp)
            raise BackupError("cannot write %s: %s" % (dest_path, exc.reason), step="wal-fetch") from None
        except (AuthenticationFailed, EOFError) as exc:
            remove_quietly(temp)
            raise VerifyError("%s" % (str(exc) or "data object %s is truncated" % segment.stored)) from None
        except (OSError, ValueError) as exc:  # gzip/zstd errors of damaged bytes
            remove_quietly(temp)
            if isinstance(exc, OSError) and exc.filename == temp:
                raise BackupError("cannot write %s: %s" % (dest_path, exc.strerror or exc), step="wal-fetch") from None
            raise VerifyError("data object %s cannot be decoded: %s" % (segment.stored, str(exc)[:120])) from None
        except BaseException:
            remove_quietly(temp)
            raise

    def check_data(self, segment: Segment) -> Optional[str]:
        """Why the data object of ``segment`` does not verify (stored and raw sha256), or None."""
        try:
            self._read_checked(self.store, segment)
        except VerifyError as exc:
            return str(exc)
        except ConfigError:
            raise
        except (AuthenticationFailed, EOFError, OSError, ValueError) as exc:
            return "data object %s cannot be decoded: %s" % (segment.stored, str(exc)[:120] or type(exc).__name__)
        return None

    # ------------------------------------------------------------------ retention and leftovers

    def remove(self, segments: List[Segment]) -> None:
        """Forget archived files (retention): every record first (made durable), then the data objects."""
        for segment in segments:
            self._delete("%s/%s" % (FOLDER, segment.record))
        syncing = getattr(self.store, "sync", None)
        if syncing is not None and segments:
            syncing(FOLDER)
        for segment in segments:
            self._delete("%s/%s" % (FOLDER, segment.stored))

    def _delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except DestinationError as exc:
            raise BackupError("cannot delete %s: %s" % (self.store.uri(key), getattr(exc, "detail", None) or exc),
                              step="cleanup") from None

    def orphans(self, grace: timedelta, now: Optional[datetime] = None) -> List[ObjectInfo]:
        """Data objects no record names (a killed push's) and our temp files, older than ``grace``."""
        limit = (now or utc_now()).timestamp() - grace.total_seconds()
        objects = self._objects()
        records = {info.key[:-len(".json")] for info in objects if RECORD_KEY.match(info.key)}
        found = []
        for info in objects:
            match = DATA_KEY.match(info.key)
            if match:
                if "%s/%s-%s" % (FOLDER, match.group("wal"), match.group("d16")) in records:
                    continue
            elif not TEMP_KEY.match(info.key):
                continue  # not named as we name things: never ours to remove
            if info.modified is None or info.modified.timestamp() <= limit:
                found.append(info)
        return found

    def remove_orphans(self, grace: timedelta, now: Optional[datetime] = None) -> List[str]:
        removed = []
        limit = (now or utc_now()).timestamp() - grace.total_seconds()
        for info in self.orphans(grace, now):
            match = DATA_KEY.match(info.key)
            if match:  # looked at again right before: a push may have adopted and recorded it since the listing
                record = "%s/%s-%s.json" % (FOLDER, match.group("wal"), match.group("d16"))
                again = self.store.stat(info.key)
                if self.store.stat(record) is not None or again is None or (
                        again.modified is not None and again.modified.timestamp() > limit):
                    continue
            try:
                self.store.delete(info.key)
            except DestinationError:
                continue  # tried again by the next run
            removed.append(self.store.uri(info.key))
        return removed

    def exists(self) -> bool:
        """Whether anything was ever archived here (a record, trusted or not)."""
        try:
            return any(RECORD_KEY.match(info.key) for info in self._objects())
        except BackupError:
            return False

    def close(self) -> None:
        self.store.close()


# ---------------------------------------------------------------------- status (health, metrics, verify)

PHYSICAL = ("base", "incremental")


def _baseline(segments: List[Segment], backups: List[Backup]) -> Tuple[Optional[Backup], Optional[Tuple[str, int]]]:
    """Where continuity is measured from: the end of the oldest physical backup taken while WAL was already
    archived (its own WAL is in the backup; recovery needs the archive from its stop LSN on), else the oldest
    archived segment. (None, None) when nothing is archived."""
    files = [s for s in segments if s.kind == "segment" and s.segno is not None]
    if not files:
        return None, None
    seg_size = segment_size_of(files[0])
    first = {}
    for segment in files:
        first.setdefault(segment.timeline, segment.segno)
    for backup in backups:
        manifest = backup.manifest
        if not manifest.stop_lsn or not manifest.timeline:
            continue
        oldest = first.get(manifest.timeline)
        if oldest is not None and lsn_to_segno(manifest.stop_lsn, seg_size) >= oldest:
            return backup, (manifest.stop_lsn, manifest.timeline)
    start = files[0]
    return None, (format_lsn((start.segno or 0) * seg_size), start.timeline)


def archive_status(cfg: Any, destination: Optional[str] = None, now: Optional[datetime] = None,
                   archive: Optional[WalArchive] = None) -> Dict[str, Any]:
    """What the archive holds: segments, the newest one and its age, the gaps, refused records.

    ``exists`` is False when nothing was ever archived; ``configured``: the ``wal/`` folder is there (the tooling
    role makes it on a host that archives), so health says when nothing arrives."""
    now = now or utc_now()
    own = archive is None
    archive = archive or WalArchive(cfg, destination)
    try:
        segments = archive.segments()
        refused = archive.refused()
    finally:
        if own:
            archive.close()
    configured = archive.root is None or os.path.isdir(os.path.join(archive.root, FOLDER))
    status: Dict[str, Any] = {"exists": bool(segments or refused), "configured": configured, "where": archive.where,
                              "segments": len([s for s in segments if s.kind == "segment"]),
                              "files": len(segments), "bytes": sum(max(s.stored_size, 0) for s in segments),
                              "refused": [{"record": key, "reason": why} for key, why in refused],
                              "gaps": [], "newest": None, "newest_age_seconds": None, "reached_lsn": None,
                              "from_lsn": None, "from_backup": None, "timelines": []}
    files = [s for s in segments if s.kind in ("segment", "partial")]
    if files:
        # the newest in WAL order (segments() sorts so), not by its date: a record dated ahead (a clock that ran
        # ahead when it was pushed) must not hide that archiving stopped
        newest = files[-1]
        status["newest"] = {"wal": newest.wal, "modified_at": iso(newest.modified_at),
                            "archived_at": iso(newest.archived_at), "future": is_future(newest.modified_at, now)}
        status["newest_age_seconds"] = max(0, int((now - newest.modified_at).total_seconds()))
    repo = open_repository(cfg, destination)
    try:
        backups = [b for kind in PHYSICAL for b in repo.backups(kind=kind)]
    except BackupError:
        backups = []
    finally:
        repo.close()
    backups.sort(key=lambda b: (b.created_at, b.id))
    backup, start = _baseline(segments, backups)
    if start is not None:
        walk: Continuity = continuity(segments, start[0], start[1])
        status.update(gaps=walk.gaps, reached_lsn=walk.reached_lsn, from_lsn=walk.start_lsn,
                      from_backup=backup.id if backup else None, timelines=walk.timelines,
                      last=walk.last.wal if walk.last else None)
    return status


class _WriteFailed(Exception):
    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc))
        self.reason = exc.strerror or str(exc)


class _Sink:
    """The fetched file being written: its I/O errors (ENOSPC, EIO) apart from the archive's decoding errors."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        try:
            return self.out.write(data)
        except OSError as exc:
            raise _WriteFailed(exc) from None

    def finish(self) -> None:
        try:
            self.out.flush()
            os.fsync(self.out.fileno())
        except OSError as exc:
            raise _WriteFailed(exc) from None


def _decoded(reader: BinaryIO) -> bytes:
    """The next chunk of decoded bytes; zlib's, ISA-L's and zstd's errors of damaged bytes (no common base class
    with OSError or ValueError) as a ValueError, so damage is a refusal and never an internal error."""
    try:
        return reader.read(CHUNK)
    except (BackupError, AuthenticationFailed, EOFError, OSError, ValueError):
        raise
    except Exception as exc:  # pylint: disable=broad-except
        raise ValueError(str(exc) or type(exc).__name__) from None


def _with_segno(segment: Segment) -> Segment:
    return replace(segment, segno=segno_of(segment.wal, segment_size_of(segment)))


def _ring(cfg: Any):
    from ..codec.keyring import load_keyring  # pylint: disable=import-outside-toplevel
    return load_keyring(cfg)


__all__ = ["Segment", "WalArchive", "archive_status", "Continuity", "continuity", "lsn_to_segno", "wal_name",
           "segment_size_of", "parse_lsn", "format_lsn", "kind_of", "parse_history", "FOLDER"]
