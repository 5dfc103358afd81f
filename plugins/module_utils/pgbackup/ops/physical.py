# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical base backups read back: restore into a data directory, verify with pg_verifybackup.

A base backup is self-contained (its tar holds the WAL from its start to its end LSN), so a restored data
directory starts and reaches consistency with no recovery settings; point-in-time recovery (ops/pitr.py) adds
them through ``restore_pgdata``'s ``finish``.
The stored tar is untrusted input: pg/basebackup.extract_tar writes plain files and directories only.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ..codec.integrity import verify_checksums
from ..codec.stored import open_stored, require_keys
from ..config.settings import PHYSICAL_KINDS, Config
from ..core.clock import utc_now
from ..core.errors import ConfigError, RestoreError, VerifyError
from ..core.fsutil import ensure_private_dir
from ..model.manifest import Backup, FileEntry
from ..pg.basebackup import TarScanner, extract_tar
from ..pg.binaries import select_tools
from ..pg.runner import first_error, run
from ..repo.catalog import SCRATCH_DIR


def is_physical(backup: Backup) -> bool:
    return backup.kind in PHYSICAL_KINDS


def backup_manifest_of(cfg: Config, backup: Backup) -> bytes:
    """The backup_manifest member of a base or incremental backup's tar (the tar is read to its end)."""
    entry = _base_entry(backup)
    scanner = TarScanner()
    try:
        with open_stored(backup, entry, cfg) as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                scanner.feed(chunk)
    except (EOFError, OSError, ValueError) as exc:
        raise VerifyError("%s file %s cannot be read: %s" % (backup.id, entry.name, exc)) from None
    if not scanner.kept:
        raise VerifyError("%s file %s holds no backup_manifest" % (backup.id, entry.name))
    return scanner.kept


def check_chain(chain: Sequence[Backup]) -> None:
    """``chain``, oldest first: a base backup, then incrementals each naming the one before as its parent, all of
    one cluster; a RestoreError names the first broken link."""
    for link in reversed(chain):  # no tar: its WAL is the archive's, replayed by point-in-time recovery
        if link.manifest.method == "wal":
            raise RestoreError("%s is a WAL-method incremental (the WAL archived from %s to %s): it is restored by "
                               "point-in-time recovery from its base to its stop LSN %s"
                               % (link.id, link.manifest.start_lsn, link.manifest.stop_lsn, link.manifest.stop_lsn))
    if not chain or chain[0].kind != "base" or chain[0].manifest.parent:
        raise RestoreError("%s: a chain starts with a base backup" % (chain[-1].id if chain else "?"))
    system = chain[0].manifest.server.system_identifier if chain[0].manifest.server else None
    for before, link in zip(chain, chain[1:]):
        if link.kind != "incremental" or link.manifest.parent != before.id:
            raise RestoreError("%s: the chain is broken at %s (its parent is %s, not %s)"
                               % (chain[-1].id, link.id, link.manifest.parent, before.id))
        if (link.manifest.server.system_identifier if link.manifest.server else None) != system:
            raise RestoreError("%s: %s is of another cluster than %s" % (chain[-1].id, link.id, chain[0].id))


def _base_entry(backup: Backup, error=VerifyError) -> FileEntry:
    entry = backup.file("base")
    if entry is None:
        raise error("%s: the manifest lists no base tar" % backup.id)
    others = [f.name for f in backup.manifest.files if f.role != "base"]
    if others:  # tablespace tars: not written by this version, so not restored by it either
        raise error("%s: files other than the base tar (%s) are not supported by this version"
                    % (backup.id, ", ".join(others)))
    return entry


def restored_label(pgdata: str) -> Optional[str]:
    """The backup id a data directory was restored from: its backup_label's LABEL (ours is the backup id),
    kept as backup_label.old once the server started; None when neither names one."""
    for name in ("backup_label", "backup_label.old"):
        try:
            with open(os.path.join(pgdata, name), encoding="utf-8", errors="replace") as handle:
                for line in handle.read(64 * 1024).splitlines():
                    if line.startswith("LABEL: "):
                        return line[len("LABEL: "):].strip()
        except OSError:
            continue
    return None


def check_empty_target(pgdata: str) -> bool:
    """True when ``pgdata`` exists (empty), False when absent; a one-line RestoreError otherwise."""
    if not os.path.lexists(pgdata):
        parent = os.path.dirname(pgdata)
        if not os.path.isdir(parent):
            raise RestoreError("data directory %s: its parent directory does not exist" % pgdata)
        return False
    if os.path.islink(pgdata) or not os.path.isdir(pgdata):
        raise RestoreError("data directory %s is not a directory" % pgdata)
    if os.listdir(pgdata):
        raise RestoreError("data directory %s is not empty: a base backup is restored only into an absent or empty "
                           "directory (nothing was written)" % pgdata)
    return True


def _empty_out(pgdata: str, existed: bool) -> None:
    """Leave ``pgdata`` as it was before the restore: absent, or empty."""
    if not existed:
        shutil.rmtree(pgdata, ignore_errors=True)
        return
    for name in os.listdir(pgdata):
        path = os.path.join(pgdata, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def restore_pgdata(cfg: Config, backups: Union[Backup, Sequence[Backup]], pgdata: str,
                   finish: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Rebuild a data directory from a base backup, or from a chain (base, incrementals, oldest first) with
    pg_combinebackup (files here: the catalog's local_copy).

    Refused before anything is written: another kind, a non-empty or missing-parent ``pgdata``, a missing
    key, a file whose sha256 differs, a broken chain. A failure half-way removes what was extracted.
    ``finish(pgdata)`` runs last (recovery settings): its failure, too, leaves ``pgdata`` as it was.
    """
    chain: List[Backup] = [backups] if isinstance(backups, Backup) else list(backups)
    if len(chain) > 1 or chain[0].kind == "incremental":
        return _restore_chain(cfg, chain, pgdata, finish)
    backup = chain[0]
    if not is_physical(backup):
        raise ConfigError("a data directory is rebuilt from a base (physical) backup; %s is a %s backup: "
                          "restore it into a database" % (backup.id, backup.kind))
    pgdata = os.path.abspath(pgdata)
    entry = _base_entry(backup, RestoreError)
    existed = check_empty_target(pgdata)
    require_keys(backup, cfg)
    verify_checksums(backup)
    started = time.monotonic()
    if existed:
        os.chmod(pgdata, 0o700)  # the server refuses a data directory others can read
    else:
        os.mkdir(pgdata, 0o700)
    try:
        with open_stored(backup, entry, cfg) as stream:
            files, size = extract_tar(stream, pgdata, "%s file %s" % (backup.id, entry.name), RestoreError)
        if not os.path.isfile(os.path.join(pgdata, "PG_VERSION")):
            raise RestoreError("%s: the base tar holds no PG_VERSION: not a data directory" % backup.id)
        if finish is not None:
            finish(pgdata)
    except (EOFError, OSError, ValueError) as exc:
        _empty_out(pgdata, existed)
        raise RestoreError("%s: %s cannot be read: %s" % (backup.id, entry.name, exc)) from None
    except BaseException:
        _empty_out(pgdata, existed)
        raise
    return {"backup_id": backup.id, "kind": backup.kind, "pgdata": pgdata, "files": files, "bytes": size,
            "start_lsn": backup.manifest.start_lsn, "stop_lsn": backup.manifest.stop_lsn,
            "timeline": backup.manifest.timeline, "seconds": round(time.monotonic() - started, 3)}


def _restore_chain(cfg: Config, chain: List[Backup], pgdata: str,
                   finish: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Each link extracted into scratch, then pg_combinebackup writes the data directory (the WAL of the last)."""
    backup = chain[-1]
    check_chain(chain)
    pgdata = os.path.abspath(pgdata)
    entries = [_base_entry(link, RestoreError) for link in chain]
    existed = check_empty_target(pgdata)
    for link in chain:
        require_keys(link, cfg)
        verify_checksums(link)
    major = (backup.manifest.server.major if backup.manifest.server else None) or 0
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's server", tools=("pg_combinebackup",))
    started = time.monotonic()
    scratch = scratch_dir(cfg, "combine")
    try:
        dirs = []
        for index, (link, entry) in enumerate(zip(chain, entries)):
            where = os.path.join(scratch, "%d" % index)
            os.mkdir(where, 0o700)
            try:
                with open_stored(link, entry, cfg) as stream:
                    extract_tar(stream, where, "%s file %s" % (link.id, entry.name), RestoreError)
            except (EOFError, OSError, ValueError) as exc:
                raise RestoreError("%s: %s cannot be read: %s" % (link.id, entry.name, exc)) from None
            dirs.append(where)
        try:
            out = run([tools.path("pg_combinebackup"), "--output=" + pgdata] + dirs, "pg_combinebackup",
                      check=False)
            if out.returncode != 0:
                raise RestoreError("%s: pg_combinebackup: %s" % (backup.id, first_error(out.stderr)))
            os.chmod(pgdata, 0o700)
            if finish is not None:
                finish(pgdata)
        except BaseException:
            if os.path.isdir(pgdata):
                _empty_out(pgdata, existed)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = sum(len(names) for _d, _s, names in os.walk(pgdata))
    return {"backup_id": backup.id, "kind": backup.kind, "pgdata": pgdata, "files": files,
            "bytes": None, "chain": [link.id for link in chain], "start_lsn": chain[0].manifest.start_lsn,
            "stop_lsn": backup.manifest.stop_lsn, "timeline": backup.manifest.timeline,
            "seconds": round(time.monotonic() - started, 3)}


def scratch_dir(cfg: Config, what: str) -> str:
    """A fresh private scratch directory in the backup directory's ``.scratch`` (catalog.FETCH_SCRATCH names,
    so a killed run's is removed by the next run's leftover cleanup)."""
    root = os.path.join(os.path.abspath(cfg.backup_dir), SCRATCH_DIR)
    ensure_private_dir(root)
    path = os.path.join(root, "%s-%d-%s" % (what, os.getpid(), utc_now().strftime("%Y%m%dT%H%M%S%f")))
    os.mkdir(path, 0o700)
    return path


def check_base_archive(cfg: Config, backup: Backup, scratch: Optional[str] = None) -> str:
    """Extract the base tar into scratch and run pg_verifybackup (of tools at least the server's major) on it:
    every file against the backup_manifest's SHA256, and the WAL from start to end LSN parsed."""
    entry = _base_entry(backup)
    major = (backup.manifest.server.major if backup.manifest.server else None) or 0
    tools = select_tools(major, cfg.pg_bin_dir, purpose="the backup's server",
                         tools=("pg_verifybackup", "pg_waldump"))
    where = scratch or scratch_dir(cfg, "verify")
    try:
        data = os.path.join(where, "data")
        os.mkdir(data, 0o700)
        label = "%s file %s" % (backup.id, entry.name)
        try:
            with open_stored(backup, entry, cfg) as stream:
                files, _size = extract_tar(stream, data, label)
        except (EOFError, OSError, ValueError) as exc:
            raise VerifyError("%s does not decompress: %s" % (label, exc)) from None
        out = run([tools.path("pg_verifybackup"), "--quiet", data], "pg_verifybackup", check=False)
        if out.returncode != 0:
            raise VerifyError("%s: pg_verifybackup: %s" % (backup.id, first_error(out.stderr)))
    finally:
        shutil.rmtree(where, ignore_errors=True)
    manifest = backup.manifest
    return "pg_verifybackup: %d files and the WAL %s..%s verified" % (files, manifest.start_lsn, manifest.stop_lsn)
