"""A real SMTP server for tests: aiosmtpd with STARTTLS and AUTH, whose answers can be steered.

``SmtpServer.start(folder)`` listens on a free localhost port with a self-signed
certificate (trusted through ``ca_file``), requires STARTTLS before AUTH, and keeps
every accepted message. ``fail_next(code, text)`` makes the next DATA answer with an
error; ``stop()``/``start`` again simulate an outage.
"""

from __future__ import annotations

import email
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "deskq", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed localhost certificate and key (openssl)."""
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "30", "-keyout", str(key), "-out", str(cert),
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
    return cert, key


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.Message:
        return email.message_from_bytes(self.data)


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.failures:
                code, text = self.failures.pop(0)
                return f"{code} {text}"
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 OK"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login.decode() == USER
        and data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """aiosmtpd on localhost: STARTTLS required, AUTH required (PLAIN/LOGIN after TLS)."""

    def __init__(self, folder: Path, *, smtputf8: bool = False) -> None:
        self.folder = folder
        self.smtputf8 = smtputf8  # offer SMTPUTF8 (RFC 6531), as Postfix 3 does
        self.cert, self.key = make_cert(folder)
        self.port = free_port()
        self.handler = Handler()
        self.controller: Controller | None = None

    @property
    def ca_file(self) -> str:
        return str(self.cert)

    def start(self) -> SmtpServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="localhost",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=_authenticate,
            enable_SMTPUTF8=self.smtputf8,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def fail_next(self, code: int, text: str) -> None:
        with self.handler.lock:
            self.handler.failures.append((code, text))

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def sending_toml(self) -> str:
        return (
            f'[sending]\nmethod = "smtp"\nhost = "localhost"\nport = {self.port}\n'
            f'security = "starttls"\nca_file = "{self.ca_file}"\nusername = "{USER}"\n'
            'password_env = "DESKQ_TEST_SMTP_PASSWORD"\n'
        )
