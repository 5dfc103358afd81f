# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``seawall-pgbackup serve``: ``/metrics`` (Prometheus text) and ``/healthz`` (health JSON, 200 or 503);
``schedule --serve`` adds ``/livez`` (200 while the scheduler's loop runs, else 503).

Standard library http.server behind a bounded front: a connection waits in one selector thread
until its request arrives (at most ``IDLE_TIMEOUT`` seconds, then it is closed), and only then takes
one of ``WORKERS`` threads, so idle or slow clients can neither pin threads nor starve a scrape.
Both pages are computed per request from the catalog, so what is served is never staler than the
files. ``/healthz`` checks the database only with ``?connect=1`` and re-hashes the newest backups
only with ``?checksums=1`` (a probe every few seconds must neither open database sessions nor read
gigabytes).
"""

from __future__ import annotations

import json
import queue
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ..config.monitoring import MonitoringSettings, parse_listen
from ..config.settings import Config
from ..core.errors import BackupError
from ..observe.metrics import metrics_text
from ..ops.health import health

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IDLE_TIMEOUT = 10.0  # seconds a client may take to send its request, and per read or write after it
WORKERS = 4          # requests computed at once (each reads the catalog)
MAX_WAITING = 256    # connections waiting for their request; beyond it the oldest is closed
MAX_QUEUED = 64      # requests waiting for a worker; beyond it a request gets 503 at once
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nbusy\n")


class BoundedHTTPServer(ThreadingHTTPServer):
    """An HTTP server whose threads and waiting connections are bounded and whose idle clients time out."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connections is accepted, not refused

    def __init__(self, address: Tuple[str, int], handler: Any, workers: int = WORKERS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__(address, handler)
        self.idle_timeout = idle_timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serve")
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._incoming: "queue.SimpleQueue[Tuple[socket.socket, Any]]" = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._closing = False
        self._watcher = threading.Thread(target=self._watch, name="serve-idle", daemon=True)
        self._watcher.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the new connection to the watcher; the accept loop never waits for a client."""
        self._incoming.put((request, client_address))
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass  # the wake socket's buffer is full: the watcher is awake anyway

    def _watch(self) -> None:
        while not self._closing:
            for key, _events in self._selector.select(timeout=0.5):
                if key.data is None:
                    self._take_incoming()
                else:
                    self._selector.unregister(key.fileobj)
                    self._dispatch(key.fileobj, key.data[0])
            self._expire(time.monotonic())

    def _take_incoming(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except OSError:
            pass
        while True:
            try:
                request, address = self._incoming.get_nowait()
            except queue.Empty:
                return
            waiting = [k for k in self._selector.get_map().values() if k.data is not None]
            if len(waiting) >= MAX_WAITING:
                oldest = min(waiting, key=lambda k: k.data[1])
                self._selector.unregister(oldest.fileobj)
                self.shutdown_request(oldest.fileobj)
            self._selector.register(request, selectors.EVENT_READ,
                                    (address, time.monotonic() + self.idle_timeout))

    def _expire(self, now: float) -> None:
        for key in [k for k in self._selector.get_map().values() if k.data is not None and k.data[1] < now]:
            self._selector.unregister(key.fileobj)
            self.shutdown_request(key.fileobj)

    def _dispatch(self, request: Any, address: Any) -> None:
        with self._queued_lock:
            if self._queued >= MAX_QUEUED:
                busy = True
            else:
                busy = False
                self._queued += 1
        if busy:
            try:
                request.settimeout(1.0)
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self._pool.submit(self._handle, request, address)

    def _handle(self, request: Any, address: Any) -> None:
        try:
            self.finish_request(request, address)
        except Exception:  # pylint: disable=broad-except  # a client that went away, a timeout
            pass
        finally:
            self.shutdown_request(request)
            with self._queued_lock:
                self._queued -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client's broken connection is not worth a traceback on the service's stderr

    def server_close(self) -> None:
        self._closing = True
        self._wake()
        self._watcher.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                self.shutdown_request(key.fileobj)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()
        self._pool.shutdown(wait=False)
        super().server_close()


def make_server(cfg: Config, settings: MonitoringSettings, listen: Optional[str] = None,
                liveness: Optional[Callable[[], bool]] = None,
                current: Optional[Callable[[], Tuple[Config, MonitoringSettings]]] = None) -> ThreadingHTTPServer:
    """``liveness``: ``schedule``'s loop check for ``/livez`` (200 while it ticks, else 503); without it no /livez.
    ``current``: the configuration to answer with now (``schedule`` reloads it on SIGHUP); else ``cfg``."""
    address: Tuple[str, int] = parse_listen(listen or settings.listen)

    class Handler(BaseHTTPRequestHandler):
        server_version = "seawall-pgbackup"
        timeout = IDLE_TIMEOUT  # each read and write of a request; HTTP/1.0: one request per connection

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            now_cfg, now_settings = current() if current is not None else (cfg, settings)
            try:
                if parts.path == "/metrics":
                    self._send(200, CONTENT_TYPE, metrics_text(now_cfg).encode("utf-8"))
                elif parts.path == "/healthz":
                    query = parse_qs(parts.query)
                    connect = query.get("connect", ["0"])[0] in ("1", "true", "yes")
                    checksums = query.get("checksums", ["0"])[0] in ("1", "true", "yes")
                    report = health(now_cfg, settings=now_settings, connect=connect, checksums=checksums)
                    code = 503 if report["status"] == "critical" else 200
                    self._send(code, "application/json", json.dumps(report, sort_keys=True).encode("utf-8"))
                elif parts.path == "/livez" and liveness is not None:
                    alive = liveness()
                    self._send(200 if alive else 503, "text/plain; charset=utf-8",
                               b"ok\n" if alive else b"the scheduler loop has stalled\n")
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")
            except BackupError as exc:
                self._send(500, "text/plain; charset=utf-8", ("error: %s\n" % exc).encode("utf-8"))
            except Exception as exc:  # pylint: disable=broad-except  # a bug: one line, the service goes on
                self._send(500, "text/plain; charset=utf-8", ("internal error: %s\n" % type(exc).__name__).encode())

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # pylint: disable=redefined-builtin
            pass  # quiet: a scrape every 15 s is not news

    try:
        return BoundedHTTPServer(address, Handler)
    except OSError as exc:
        raise BackupError("cannot listen on %s:%d: %s" % (address[0], address[1], exc.strerror or exc),
                          step="serve") from None


def serve_forever(server: ThreadingHTTPServer) -> None:
    """Serve until KeyboardInterrupt (SIGINT/SIGTERM in the CLI)."""
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    return thread
