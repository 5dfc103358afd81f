"""Real local receivers for the notification tests, on 127.0.0.1 and free ports.

SmtpReceiver   aiosmtpd with AUTH (LOGIN/PLAIN) over STARTTLS or implicit TLS, a self-signed certificate
               for 127.0.0.1 (its PEM is the client's cafile); records every accepted message.
HttpReceiver   records every POST (path, headers, body); Slack, Discord, custom webhooks and the
               dead-man's-switch pings all land here under their own paths. ``fail_paths`` answer 500.
               ``check_hmac`` recomputes the custom webhook's signature the way a receiver must.
"""

from __future__ import annotations

import datetime
import email
import hashlib
import hmac
import ipaddress
import json
import os
import ssl
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from tests.support.pgcluster import free_port


def self_signed_cert(directory: str) -> tuple:
    """(cert.pem, key.pem) for 127.0.0.1 and localhost, made with cryptography (ansible-core's dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "smtp-cert.pem")
    key_path = os.path.join(directory, "smtp-key.pem")
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path


class SmtpReceiver:
    """aiosmtpd on a free port; ``mode`` starttls (AUTH only after STARTTLS) or ssl (implicit TLS)."""

    def __init__(self, directory: str, username: str = "backup", password: str = "s3cret-smtp",
                 mode: str = "starttls") -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.cafile, keyfile = self_signed_cert(directory)
        self.messages: List[Message] = []
        self.logins: List[str] = []
        self.port = free_port()
        self.mode = mode
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cafile, keyfile)
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                receiver.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (auth_data.login.decode() == username and auth_data.password.decode() == password)
            if ok:
                receiver.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        kwargs: Dict[str, Any] = {"authenticator": authenticator, "auth_require_tls": True}
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
            self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        else:
            # implicit TLS: the whole session is encrypted (aiosmtpd only tracks STARTTLS for auth_require_tls)
            kwargs["auth_require_tls"] = False
            self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, ssl_context=context,
                                         **kwargs)

    def __enter__(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


class HttpReceiver:
    """Records POSTs and GETs: ``requests`` is a list of {method, path, headers, body}."""

    def __init__(self, fail_paths: tuple = ()) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.fail_paths = set(fail_paths)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                code = 500 if self.path in receiver.fail_paths else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = _record  # noqa: N815
            do_GET = _record  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def url(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def at(self, path: str) -> List[Dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def json_at(self, path: str) -> List[Dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.at(path)]

    def __enter__(self) -> "HttpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_hmac(request: Dict[str, Any], secret: str, header: str = "x-seawall-signature",
               max_skew: Optional[int] = 300) -> bool:
    """What a receiver does: recompute HMAC-SHA256 over '<timestamp>.<body>' and compare in constant time."""
    stamp = request["headers"].get("x-seawall-timestamp", "")
    given = request["headers"].get(header.lower(), "")
    if max_skew is not None and (not stamp.isdigit() or abs(int(stamp) - int(datetime.datetime.now().timestamp())) > max_skew):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(given, expected)
