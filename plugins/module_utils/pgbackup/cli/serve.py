# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``seawall-pgbackup serve``: ``/metrics`` (Prometheus text) and ``/healthz`` (health JSON, 200 or 503).

Standard library http.server, one thread per request; both pages are computed per request from the
catalog, so what is served is never staler than the files. ``/healthz`` checks the database only
with ``?connect=1`` and re-hashes the newest backups only with ``?checksums=1`` (a probe every few
seconds must neither open database sessions nor read gigabytes).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ..config.monitoring import MonitoringSettings, parse_listen
from ..config.settings import Config
from ..core.errors import BackupError
from ..observe.metrics import metrics_text
from ..ops.health import health

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_server(cfg: Config, settings: MonitoringSettings, listen: Optional[str] = None) -> ThreadingHTTPServer:
    address: Tuple[str, int] = parse_listen(listen or settings.listen)

    class Handler(BaseHTTPRequestHandler):
        server_version = "seawall-pgbackup"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            try:
                if parts.path == "/metrics":
                    self._send(200, CONTENT_TYPE, metrics_text(cfg).encode("utf-8"))
                elif parts.path == "/healthz":
                    query = parse_qs(parts.query)
                    connect = query.get("connect", ["0"])[0] in ("1", "true", "yes")
                    checksums = query.get("checksums", ["0"])[0] in ("1", "true", "yes")
                    report = health(cfg, settings=settings, connect=connect, checksums=checksums)
                    code = 503 if report["status"] == "critical" else 200
                    self._send(code, "application/json", json.dumps(report, sort_keys=True).encode("utf-8"))
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")
            except BackupError as exc:
                self._send(500, "text/plain; charset=utf-8", ("error: %s\n" % exc).encode("utf-8"))

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # pylint: disable=redefined-builtin
            pass  # quiet: a scrape every 15 s is not news

    try:
        return ThreadingHTTPServer(address, Handler)
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
