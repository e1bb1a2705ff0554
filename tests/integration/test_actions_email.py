"""The e-mail action against a real local aiosmtpd server with STARTTLS and AUTH."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from sluice.actions.engine import ActionEngine
from sluice.actions.service import ActionsService
from sluice.config.models import ActionConfig
from sluice.core.context import EpochContext
from sluice.core.settings import Settings
from sluice.storage.checkpoints import CheckpointStore
from tests.integration.test_actions_receiver import free_port


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Mailbox:
    """Messages the server accepted, and the port it listens on."""

    port: int
    cert: Path
    messages: list[Message] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    box = Mailbox(free_port(), cert)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            box.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == b"mail-pw"
        if ok:
            box.logins.append(data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def test_email_is_sent_with_starttls_and_auth(
    settings: Settings, smtp_server: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "mail-pw")
    import pyarrow as pa

    engine = ActionEngine(
        [
            ActionConfig(
                name="mail-ops",
                when="temp > 80",
                type="email",
                host="127.0.0.1",
                port=smtp_server.port,
                sender="sluice@example.com",
                to="ops@example.com",
                username="sluice",
                password="${SMTP_PASSWORD}",
                ca_file=str(smtp_server.cert),
                subject="[{{ severity }}] {{ device }} is hot",
                severity="critical",
                payload="Device {{ device }} reached {{ temp }} ({{ reason }}).",
            )
        ],
        pipeline="p",
        settings=settings,
        dispatch=False,
    ).start()
    table = pa.table({"device": ["pump-7"], "temp": [93.5], "m_reason": ["temp 4.1 sigma"]})
    pending = engine.evaluate(table, EpochContext("p", 1))
    CheckpointStore(engine.db).commit("p", 1, {}, {}, [engine.outbox_writer(pending, 1)])
    try:
        assert engine.dispatcher.run_once() == 1
    finally:
        engine.close()
    (row,) = ActionsService(engine.db).list()
    assert row["status"] == "delivered", row["last_error"]
    (msg,) = smtp_server.messages
    assert msg["Subject"] == "[critical] pump-7 is hot"
    assert msg["To"] == "ops@example.com"
    assert msg["Message-ID"] == f"<{row['idempotency_key']}@sluice>"
    assert msg.get_payload().strip() == "Device pump-7 reached 93.5 (temp 4.1 sigma)."
    assert smtp_server.logins == ["sluice"]


def test_untrusted_certificate_fails_permanently(settings: Settings, smtp_server: Mailbox) -> None:
    import pyarrow as pa

    engine = ActionEngine(
        [
            ActionConfig(
                name="mail",
                when="true",
                type="email",
                host="127.0.0.1",
                port=smtp_server.port,
                sender="a@example.com",
                to=["b@example.com"],
            )
        ],
        pipeline="p",
        settings=settings,
        dispatch=False,
    ).start()
    pending = engine.evaluate(pa.table({"x": [1]}), EpochContext("p", 1))
    CheckpointStore(engine.db).commit("p", 1, {}, {}, [engine.outbox_writer(pending, 1)])
    try:
        engine.dispatcher.run_once()
    finally:
        engine.close()
    (row,) = ActionsService(engine.db).list()
    assert row["status"] == "failed"
    assert "TLS verification failed" in row["last_error"]
    assert smtp_server.messages == []
