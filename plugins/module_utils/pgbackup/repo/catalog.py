# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one backup catalog, over any store: data files plus a manifest written last.

A data file without a manifest is an incomplete backup: never listed, restored or counted,
and removed by the next run (which holds the repository lock, so it cannot be in progress).
The backup directory is one store (store/local.py); a destination (a second directory, S3, Azure,
GCS) is another, and ``open_repository(cfg, name)`` gives the same catalog over it: listing,
selection, retention, leftovers, verification records and restore read through the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from ..codec.authn import Trust, Untrusted, render_manifest
from ..config.settings import ALL_KINDS
from ..core.clock import is_future, iso, utc_now
from ..core.duration import parse_duration
from ..core.errors import BackupError, ConfigError, NotFound, VerifyError
from ..core.fsutil import check_private_dir, create_private, ensure_private_dir, trusted_owner, write_file_atomic
from ..core.process import alive
from ..model.manifest import (MANIFEST_SUFFIX, Backup, FileEntry, Manifest, ManifestError, Verification, _bad_reason,
                              backup_from_document, decode_manifest, slug)
from ..store import LocalStore, ObjectInfo, Store, find_settings, open_destination
from ..store.base import DestinationError
from .lock import RepositoryLock

SUBDIRS = ("full", "incremental", "schema", "data", "globals", "base", "logs")
SCRATCH_DIR = ".scratch"
MANIFEST_LIMIT = 16 * 1024 * 1024
DEFAULT_LEFTOVER_GRACE = timedelta(hours=6)

# The only names a leftover may have: a backup id of the folder's kind and our suffixes (``.dump.gz.age``,
# ``.globals.sql.zst``, ``.base.tar.gz.enc``, ``.rekey1``, ``.partial``), or a manifest's atomic-write temp name.
# Anything else in a kind folder was put there by someone else and is never removed (issue #11).
_ID = r"(?P<kind>[a-z]+)-[A-Za-z0-9_.]+-[0-9]{8}T[0-9]{6}Z(?:-[1-9][0-9]*)?"
_SUFFIXES = r"(?:\.(?:dump|globals|sql|base|tar|gz|zst|enc|age|json|partial|rekey[0-9]+))+"
OUR_NAME = re.compile(r"^%s%s$" % (_ID, _SUFFIXES))
OUR_TEMP_NAME = re.compile(r"^\.%s%s\.[0-9]+(?:-[0-9a-f]+)?\.tmp$" % (_ID, _SUFFIXES))
# Scratch directories of restores and destination fetches: ``.restore-<pid>-<random>`` (older versions:
# ``.restore-<random>``) in the backup directory, ``<store>-<pid>-<stamp>`` in ``.scratch``.
RESTORE_SCRATCH = re.compile(r"^\.restore-(?:(?P<pid>[0-9]+)-)?[A-Za-z0-9_]+$")
FETCH_SCRATCH = re.compile(r"^.+-(?P<pid>[0-9]+)-[0-9]{8}T[0-9]{12}$")


def leftover_grace(cfg: Any) -> timedelta:
    """The configured age after which files no manifest names are removed (default 6 h)."""
    value = getattr(cfg, "leftover_grace", None)  # BACKUP_LEFTOVER_GRACE / backup.cleanup.leftoverGrace
    return DEFAULT_LEFTOVER_GRACE if value is None else parse_duration("leftover_grace", value)


def is_our_file(key: str) -> bool:
    """Whether ``key`` (``<kind>/<name>``) is named as this tool names a backup's files and temp files."""
    folder, _sep, name = key.rpartition("/")
    match = OUR_NAME.match(name) or OUR_TEMP_NAME.match(name)
    return bool(match) and match.group("kind") == folder  # type: ignore[union-attr]


def stored_manifest_bytes(backup: Backup, trust: Optional[Trust] = None) -> bytes:
    """The manifest as a destination keeps it: without the local list of copies, its describing fields sealed,
    signed (``Trust.destination_document``)."""
    return render_manifest((trust or Trust()).destination_document(backup.manifest))


class Repository:
    """Backups in a store laid out as ``full/ schema/ data/ globals/`` (plus ``logs/`` in the backup directory).

    ``Repository(path)`` is the backup directory. ``Repository(store, destination=name)`` is the catalog of
    the copies at a destination: its backups' ``manifest_path`` are keys (``full/<id>.json``), a backup
    whose data object is missing or of the wrong size is listed as bad, and a restore or deep verification
    reads a scratch copy fetched (sha256 checked) through the store.
    """

    def __init__(self, root: Union[str, Store], destination: Optional[str] = None,
                 scratch_root: Optional[str] = None, trust: Optional[Trust] = None) -> None:
        self.store: Store = LocalStore("backups", root, role="backup directory") if isinstance(root, str) else root
        self.destination = destination
        # What this host signs with and accepts (codec/authn.py); Trust() when no key is configured.
        self.trust = trust or Trust()
        self.refused: Dict[str, Untrusted] = {}  # backup id (from the manifest's name) -> why it is not trusted
        local = self.store.local_path("")
        self.root = os.path.abspath(local) if local is not None and destination is None else None
        self.where = self.root or "destination %r (%s)" % (self.store.name, self.store.uri())
        self.scratch_root = scratch_root or (os.path.join(self.root, SCRATCH_DIR) if self.root else None)

    # ------------------------------------------------------------------ the backup directory's own layout

    def kind_dir(self, kind: str) -> str:
        return os.path.join(self._local_root(), kind)

    @property
    def log_dir(self) -> str:
        return os.path.join(self._local_root(), "logs")

    def _local_root(self) -> str:
        if self.root is None:
            raise BackupError("%s is not the backup directory" % self.where)
        return self.root

    def prepare(self) -> None:
        """Create the layout (0700), or check an existing one: ours, not writable by others, no symlinked
        folder (fsutil.check_private_dir). An existing directory's mode is never changed."""
        ensure_private_dir(self._local_root(), follow=True)
        for sub in SUBDIRS:
            ensure_private_dir(os.path.join(self._local_root(), sub))

    def lock(self, wait_seconds: float = 0) -> RepositoryLock:
        return RepositoryLock(os.path.join(self._local_root(), ".lock"), wait_seconds)

    def new_id(self, kind: str, database: str, moment: datetime) -> str:
        """A fresh id: no manifest and no file of any earlier run (a killed run's leftover included) has it."""
        base = "%s-%s-%s" % (kind, slug(database), moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        taken = {info.key.rsplit("/", 1)[-1] for info in self.store.list(kind + "/")}
        candidate, counter = base, 1
        while any(name == candidate + MANIFEST_SUFFIX or name.startswith(candidate + ".") for name in taken):
            counter += 1
            candidate = "%s-%d" % (base, counter)
        return candidate

    def manifest_path(self, kind: str, backup_id: str) -> str:
        return os.path.join(self.kind_dir(kind), backup_id + MANIFEST_SUFFIX)

    # ------------------------------------------------------------------ keys and locations

    def location(self, key: str) -> str:
        """Where an object is, as people see it: a path in the backup directory, a URI at a destination."""
        path = self.store.local_path(key) if self.destination is None else None
        return path if path is not None else self.store.uri(key)

    def _backup_location(self, key: str) -> str:
        return self.store.local_path(key) if self.destination is None else key  # type: ignore[return-value]

    def key_of(self, backup: Backup) -> str:
        """The manifest's key in the store."""
        if self.destination is None and os.path.isabs(backup.manifest_path):
            return os.path.relpath(backup.manifest_path, self.root or "/").replace(os.sep, "/")
        return backup.manifest_path

    def file_key(self, backup: Backup, entry: FileEntry) -> str:
        return "%s/%s" % (self.key_of(backup).rsplit("/", 1)[0], entry.name)

    # ------------------------------------------------------------------ reading the catalog

    def objects(self) -> Dict[str, ObjectInfo]:
        """Every object directly in a kind's folder, by key."""
        found: Dict[str, ObjectInfo] = {}
        if self.root is not None and os.path.lexists(self.root):
            # another user's directory (or one others can write) is refused for reading too: what we would
            # restore from it is theirs (fsutil.check_private_dir, like ssh's StrictModes)
            check_private_dir(self.root, follow=True)
        for kind in ALL_KINDS:
            if self.root is not None and os.path.islink(os.path.join(self.root, kind)):
                # a planted ``full -> /elsewhere``: refused, never followed (nor its files deleted)
                raise ConfigError("%s is a symbolic link: refusing to follow it; use the directory it points to"
                                  % os.path.join(self.root, kind))
            for info in self.store.list(kind + "/"):
                if info.key.count("/") == 1:
                    found[info.key] = info
        return found

    @staticmethod
    def _is_manifest(key: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        return name.endswith(MANIFEST_SUFFIX) and not name.startswith(".")

    def _load(self, key: str, objects: Dict[str, ObjectInfo]) -> Optional[Backup]:
        return self._check(key, objects)[0]

    def _check(self, key: str, objects: Dict[str, ObjectInfo]) -> Tuple[Optional[Backup], Optional[str]]:
        """(the backup, None), or (None, why its manifest is not trusted)."""
        listed = objects.get(key)
        if listed is not None and listed.size > MANIFEST_LIMIT:
            # the manifest's own fault, not the destination's: skipped like any other invalid manifest
            return None, "cannot be read: object is larger than %d bytes" % MANIFEST_LIMIT
        try:
            data = self.store.read_bytes(key, limit=MANIFEST_LIMIT)
        except DestinationError as exc:
            if self.destination is None:
                return None, "cannot be read: %s" % (exc.detail or exc)  # removed meanwhile, or unreadable
            raise
        location = self._backup_location(key)
        try:
            backup = self.trusted(data, location)
        except ManifestError as exc:
            message = str(exc)
            return None, message[len(location) + 2:] if message.startswith(location + ": ") else message
        except Untrusted as exc:
            self.refused[key.rsplit("/", 1)[-1][:-len(MANIFEST_SUFFIX)]] = exc
            return None, "the manifest %s" % exc.reason
        folder = key.rsplit("/", 1)[0]
        if folder != backup.kind:  # a copy in another kind's folder would list a backup whose files are elsewhere
            return None, "a %s backup's manifest in the %s folder (a copy?): not trusted" % (backup.kind, folder)
        if self.destination is None:
            return backup, None
        missing = [f.name for f in backup.manifest.files
                   if (objects.get(self.file_key(backup, f)) or ObjectInfo("", -1)).size != f.size]
        if missing and backup.manifest.status == "ok":
            # Listed as bad, never offered for restore: a data object is gone or of the wrong size.
            backup.manifest.verification = Verification(
                level="listing", at=utc_now(), ok=False,
                details="missing or wrong size at destination %r: %s" % (self.store.name, ", ".join(missing)))
        return backup, None

    def trusted(self, data: bytes, location: str) -> Backup:
        """The backup whose manifest bytes are ``data``, if this host trusts them: raises ManifestError (not a
        manifest of ours) or Untrusted (not signed by a trusted key, another repository's, or against policy)."""
        document = decode_manifest(data, location)
        if isinstance(document, dict):
            self.trust.check_document(data, document)
        backup = backup_from_document(document, location)
        self.trust.check_policy(backup.manifest)
        return backup

    def backups(self, kind: Optional[str] = None, database: Optional[str] = None,
                include_bad: bool = False) -> List[Backup]:
        """Manifested backups, oldest first. Unreadable manifests are skipped, never trusted."""
        objects = self.objects()
        found = []
        for key in sorted(objects):
            if not self._is_manifest(key) or (kind and not key.startswith(kind + "/")):
                continue
            backup = self._load(key, objects)
            if backup is None:
                continue
            if kind and backup.kind != kind:
                continue
            if database and backup.database != database:
                continue
            if not include_bad and not backup.good:
                continue
            found.append(backup)
        found.sort(key=lambda b: (b.created_at, b.id))
        return found

    def damaged(self, backups: List[Backup], objects: Optional[Dict[str, ObjectInfo]] = None) -> Dict[str, str]:
        """Id -> why, for every backup whose files are not all present with the recorded sizes.

        A stat from the listing already read (``objects``), not a re-hash: cheap for 10,000 manifests.
        """
        objects = self.objects() if objects is None else objects
        found: Dict[str, str] = {}
        for backup in backups:
            problems = []
            for entry in backup.manifest.files:
                info = objects.get(self.file_key(backup, entry))
                if info is None:
                    problems.append("%s is missing" % entry.name)
                elif info.size != entry.size:
                    problems.append("%s has %d bytes, %d recorded" % (entry.name, info.size, entry.size))
            if problems:
                found[backup.id] = ", ".join(problems)
        return found

    def invalid_manifests(self) -> List[Tuple[str, str]]:
        """(location, why) of every manifest ``backups()`` skips as unreadable or invalid."""
        objects = self.objects()
        found = []
        for key in sorted(k for k in objects if self._is_manifest(k)):
            backup, reason = self._check(key, objects)
            if backup is None:
                found.append((self.location(key), reason or "unreadable"))
        return found

    def find(self, selector: str, kind: Optional[str] = None, database: Optional[str] = None,
             allow_bad: bool = False) -> Backup:
        """An id, a manifest or data file path, or ``latest`` (of ``kind``, default full).

        ``latest`` is the newest good backup that is not dated in the future (a clock that ran ahead):
        such a one is chosen only by its id or path.
        """
        if selector == "latest":
            found = self.backups(kind=kind or "full", database=database)
            chosen = present(found)
            if not chosen:
                ahead = " (%d dated in the future, chosen only by id: check the clock)" % len(found) if found else ""
                raise NotFound("no good %s backup%s in %s%s" % (kind or "full", " of %s" % database if database else "",
                                                                self.where, ahead))
            return chosen[-1]
        if self.destination is None and (os.path.sep in selector or selector.endswith(MANIFEST_SUFFIX)
                                         or os.path.exists(selector)):
            return self._find_by_path(selector)
        wanted = os.path.basename(selector)
        for backup in self.backups(include_bad=True):
            if backup.id == selector or os.path.basename(backup.manifest_path) == wanted:
                if not backup.good and not allow_bad:
                    raise NotFound("backup %s in %s is marked bad (%s)" % (selector, self.where, _bad_reason(backup))
                                   if self.destination else
                                   "backup %s is marked bad (%s)" % (selector, _bad_reason(backup)))
                return backup
        refused = self.refused.get(selector)
        if refused is not None:
            if refused.missing_key:
                raise self.trust.key_missing(selector, refused)
            raise VerifyError("backup %s in %s is not trusted: its manifest %s" % (selector, self.where, refused.reason))
        if self.destination:
            raise NotFound("no backup with id %r in %s" % (selector, self.where), hint="list-destination",
                           hint_value=self.destination)
        raise NotFound("no backup with id %r in %s" % (selector, self.where), hint="list")

    def newest_before(self, moment: datetime, kind: str = "full", database: Optional[str] = None) -> Backup:
        """The newest good backup of ``kind`` that started before ``moment`` (and is not dated in the future)."""
        chosen = [b for b in present(self.backups(kind=kind, database=database)) if b.created_at < moment]
        if not chosen:
            raise NotFound("no good %s backup%s before %s in %s" % (kind, " of %s" % database if database else "",
                                                                    iso(moment), self.where))
        return chosen[-1]

    def _find_by_path(self, path: str) -> Backup:
        path = os.path.abspath(path)
        if path.endswith(MANIFEST_SUFFIX):
            try:
                return self.read_path(path)
            except ManifestError as exc:
                message = str(exc)
                raise NotFound("%s is not a readable seawall manifest: %s"
                               % (path, message[len(path) + 2:] if message.startswith(path + ": ") else message)
                               ) from None
            except Untrusted as exc:
                if exc.missing_key:
                    raise self.trust.key_missing(path, exc) from None
                raise VerifyError("%s is not trusted: the manifest %s" % (path, exc.reason)) from None
        directory, name = os.path.split(path)
        for candidate in os.listdir(directory) if os.path.isdir(directory) else []:
            if candidate.endswith(MANIFEST_SUFFIX):
                try:
                    backup = self.read_path(os.path.join(directory, candidate))
                except (ManifestError, Untrusted):
                    continue
                if any(f.name == name for f in backup.manifest.files):
                    return backup
        raise NotFound("%s belongs to no complete backup (no manifest names it): it is not restorable" % path)

    def read_path(self, path: str) -> Backup:
        """The backup of the manifest file ``path`` (ManifestError or Untrusted when it is not to be trusted)."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(MANIFEST_LIMIT + 1)
        except OSError as exc:
            raise ManifestError("%s: cannot be read: %s" % (path, exc.strerror or exc)) from None
        if len(data) > MANIFEST_LIMIT:
            raise ManifestError("%s: cannot be read: larger than %d bytes" % (path, MANIFEST_LIMIT))
        return self.trusted(data, path)

    def reload(self, backup: Backup) -> Optional[Backup]:
        """The backup's manifest as it is now (None: removed meanwhile, or no longer trusted). Call under the lock
        before changing it."""
        key = self.key_of(backup)
        try:
            data = self.store.read_bytes(key, limit=MANIFEST_LIMIT)
            return self.trusted(data, self._backup_location(key))
        except (DestinationError, ManifestError, Untrusted):
            return None

    def summary(self, backup: Backup) -> Dict[str, Any]:
        """The listing shape; at a destination, files and manifest are URIs and the destination is named."""
        row = backup.summary()
        if self.destination is not None:
            row["files"] = [self.store.uri(self.file_key(backup, f)) for f in backup.manifest.files]
            row["manifest"] = self.store.uri(self.key_of(backup))
            row["destination"] = self.destination
        return row

    # ------------------------------------------------------------------ leftovers

    def leftover_objects(self, backups: Optional[List[Backup]] = None) -> List[ObjectInfo]:
        """Objects no manifest names: partial writes and data files of interrupted runs.

        ``backups``: the catalog as already read with include_bad=True (10,000 manifests are read once).
        An object named like a manifest this version cannot read (a newer format, say) is not a leftover:
        it may well belong to that manifest.
        Only objects named as this tool names them (``is_our_file``) are leftovers: a file someone else put
        in a kind folder is never one, whatever its age.
        """
        backups = self.backups(include_bad=True) if backups is None else backups
        objects = self.objects()
        named = {self.file_key(b, entry) for b in backups for entry in b.manifest.files}
        readable = {self.key_of(b) for b in backups}
        foreign = [k[:-len(MANIFEST_SUFFIX)] for k in objects if self._is_manifest(k) and k not in readable]
        return [info for key, info in sorted(objects.items())
                if not self._is_manifest(key) and key not in named and is_our_file(key)
                and not any(key.startswith(stem + ".") for stem in foreign)]

    def leftovers(self, backups: Optional[List[Backup]] = None) -> List[str]:
        """Locations (paths here, URIs at a destination) of the leftover objects."""
        return [self.location(info.key) for info in self.leftover_objects(backups)]

    def leftovers_by_age(self, backups: List[Backup], now: datetime,
                         grace: timedelta) -> Tuple[List[str], List[str]]:
        """(old, young) leftover keys: only those older than the grace period may be removed."""
        old: List[str] = []
        young: List[str] = []
        limit = now.timestamp() - grace.total_seconds()
        for info in self.leftover_objects(backups):
            (old if info.modified is None or info.modified.timestamp() <= limit else young).append(info.key)
        return old, young

    def remove_leftovers(self, grace: Optional[timedelta] = None, now: Optional[datetime] = None) -> List[str]:
        """Leftovers older than ``grace`` (default 6 h), and stale scratch directories. Call only while
        holding the lock."""
        now = now or utc_now()
        grace = DEFAULT_LEFTOVER_GRACE if grace is None else grace
        backups = self.backups(include_bad=True)
        removed = []
        for key in self.leftovers_by_age(backups, now, grace)[0]:
            try:
                self.store.delete(key)
            except DestinationError:
                continue  # tried again by the next run
            removed.append(self.location(key))
        return removed + self.remove_stale_scratch(grace, now)

    def stale_scratch(self, grace: timedelta, now: Optional[datetime] = None) -> List[str]:
        """Scratch directories of killed restores and fetches: ours by name, real directories (no symlink) of
        this user, their process gone, untouched for ``grace``."""
        if self.root is None:
            return []
        limit = (now or utc_now()).timestamp() - grace.total_seconds()
        found = []
        for folder, pattern in ((self.root, RESTORE_SCRATCH), (os.path.join(self.root, SCRATCH_DIR), FETCH_SCRATCH)):
            try:
                if folder != self.root and not stat.S_ISDIR(os.lstat(folder).st_mode):
                    continue
                names = os.listdir(folder)
            except OSError:
                continue
            for name in sorted(names):
                match = pattern.match(name)
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not match or not stat.S_ISDIR(st.st_mode) or not trusted_owner(st.st_uid) or st.st_mtime > limit:
                    continue
                if match.group("pid") and alive(int(match.group("pid"))):
                    continue
                found.append(path)
        return found

    def remove_stale_scratch(self, grace: timedelta, now: Optional[datetime] = None) -> List[str]:
        removed = []
        for path in self.stale_scratch(grace, now):
            try:
                shutil.rmtree(path)  # never follows a symlink inside (fd-based on Linux)
            except OSError:
                continue  # tried again by the next run
            removed.append(path)
        return removed

    # ------------------------------------------------------------------ changing the catalog

    def save(self, backup: Backup) -> None:
        """Rewrite a backup's manifest in place (atomically; a destination's without the local copies list)."""
        if self.destination is None:
            write_file_atomic(backup.manifest_path, self.trust.render(backup.manifest))
        else:
            self.store.put_bytes(self.key_of(backup), stored_manifest_bytes(backup, self.trust))

    def unlist(self, backup: Backup) -> None:
        """Remove the manifest: from here on the backup is not listed, restored or counted."""
        try:
            self.store.delete(self.key_of(backup))
        except DestinationError as exc:
            raise BackupError("cannot delete backup %s: %s" % (backup.id, exc.detail or exc), step="cleanup") from None

    def sync_unlisted(self, backups: List[Backup]) -> None:
        """Make removed manifests durable before any data file goes (a directory's fsync)."""
        syncing = getattr(self.store, "sync", None)
        if syncing is not None:
            for folder in sorted({self.key_of(b).rsplit("/", 1)[0] for b in backups}):
                syncing(folder)

    def remove_files(self, backup: Backup, protected: Optional[set] = None) -> None:
        """The data files of an unlisted backup, except any a kept manifest names (keys)."""
        for entry in backup.manifest.files:
            key = self.file_key(backup, entry)
            if protected and key in protected:
                continue
            try:
                self.store.delete(key)
            except DestinationError as exc:
                raise BackupError("deleted the manifest of %s but not its file %s (now a leftover): %s"
                                  % (backup.id, self.location(key), exc.detail or exc), step="cleanup") from None

    def remove_object(self, key: str) -> None:
        try:
            self.store.delete(key)
        except DestinationError as exc:
            raise BackupError("cannot remove leftover %s: %s" % (self.location(key), exc.detail or exc),
                              step="cleanup") from None

    # ------------------------------------------------------------------ reading a backup's data

    def check_objects(self, backup: Backup) -> str:
        """Stream every object: size and sha256 against the manifest. Raises VerifyError naming the first bad one."""
        for entry in backup.manifest.files:
            key = self.file_key(backup, entry)
            if self.store.stat(key) is None:
                raise VerifyError("%s: object %s is missing" % (backup.id, self.store.uri(key)))
            size, sha = self.store.sha256(key)
            if size != entry.size:
                raise VerifyError("%s: object %s has %d bytes, the manifest recorded %d"
                                  % (backup.id, self.store.uri(key), size, entry.size))
            if sha != entry.sha256:
                raise VerifyError("%s: object %s does not match its sha256 (corrupted)"
                                  % (backup.id, self.store.uri(key)))
        return "checksums match (streamed from %s)" % self.store.uri()

    def fetch(self, backup: Backup, root: str) -> Backup:
        """Files and manifest into ``root`` laid out like a backup directory; sha256 checked on the way."""
        folder = os.path.join(root, backup.kind)
        ensure_private_dir(root)
        ensure_private_dir(folder)
        for entry in backup.manifest.files:
            key = self.file_key(backup, entry)
            digest = hashlib.sha256()
            size = 0
            with create_private(os.path.join(folder, entry.name)) as handle:
                for chunk in self.store.read(key):
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if size != entry.size or digest.hexdigest() != entry.sha256:
                raise VerifyError("%s: object %s does not match its manifest (%d bytes, sha256 %s); not restored"
                                  % (backup.id, self.store.uri(key), size, digest.hexdigest()))
        path = os.path.join(folder, backup.id + MANIFEST_SUFFIX)
        try:
            document = self.trust.opened_document(backup.manifest)
        except ValueError as exc:  # AuthenticationFailed: a sealed description that is not this backup's
            raise VerifyError("%s: %s" % (backup.id, exc)) from None
        with create_private(path) as handle:
            handle.write(render_manifest(document))
        # the manifest as read (and trusted) at the destination; the scratch file is for tools reading it
        return Backup(Manifest.from_dict(document, path), path)

    @contextlib.contextmanager
    def local_copy(self, backup: Backup) -> Iterator[Backup]:
        """The backup as files on this host, for tools that need them (pg_restore wants a seekable archive).

        In the backup directory: the backup itself. At a destination: a private scratch copy inside the
        backup directory (same disk, same permissions), fetched through the store and removed afterwards.
        """
        if self.destination is None:
            yield backup
            return
        if not self.scratch_root:
            raise BackupError("no scratch directory to fetch %s from %s into" % (backup.id, self.where))
        ensure_private_dir(os.path.dirname(self.scratch_root), follow=True)
        ensure_private_dir(self.scratch_root)
        scratch = os.path.join(self.scratch_root, "%s-%d-%s" % (self.store.name, os.getpid(),
                                                                utc_now().strftime("%Y%m%dT%H%M%S%f")))
        try:
            ensure_private_dir(scratch)
            yield self.fetch(backup, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def close(self) -> None:
        self.store.close()


def present(backups: List[Backup], now: Optional[datetime] = None) -> List[Backup]:
    """``backups`` without those dated more than FUTURE_TOLERANCE ahead of ``now`` (clock skew)."""
    now = now or utc_now()
    return [b for b in backups if not is_future(b.created_at, now)]


def open_repository(cfg: Any, destination: Optional[str] = None) -> Repository:
    """The catalog of the backup directory, or of the copies at the destination named ``destination``."""
    trust = Trust.from_config(cfg)
    if not destination:
        return Repository(cfg.backup_dir, trust=trust)
    store = open_destination(find_settings(cfg, destination))
    return Repository(store, destination=destination, trust=trust,
                      scratch_root=os.path.join(os.path.abspath(cfg.backup_dir), SCRATCH_DIR))
