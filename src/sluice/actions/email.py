"""The ``email`` action: SMTP with STARTTLS (smtplib); ``subject`` is a template.

The body is the rendered payload (a string as is, anything else as indented JSON). The
Message-ID is derived from the idempotency key so mail systems can drop repeats.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, ClassVar

import orjson
from pydantic import field_validator

from sluice.actions.base import Action, Delivery, OptionsModel, resolve_secrets
from sluice.actions.webhook import _check_timeout
from sluice.core.errors import PermanentActionError, TransientActionError
from sluice.core.types import duration_us


class EmailOptions(OptionsModel):
    """Options of the ``email`` action."""

    host: str
    port: int = 587
    sender: str
    to: list[str]
    subject: str = "[{{ severity }}] Sluice action {{ action }}"
    starttls: bool = True
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    timeout: str | float = "30s"

    _t = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class EmailAction(Action):
    """Sends one e-mail per action."""

    Options = EmailOptions
    options: EmailOptions
    template_fields: ClassVar[tuple[str, ...]] = ("subject",)

    @property
    def target(self) -> str:
        """The SMTP server."""
        return f"smtp://{self.options.host}:{self.options.port}"

    def message(self, delivery: Delivery) -> EmailMessage:
        """Build the e-mail for ``delivery``."""
        msg = EmailMessage()
        msg["From"] = self.options.sender
        msg["To"] = ", ".join(self.options.to)
        msg["Subject"] = str(delivery.message.get("subject", self.name)).replace("\n", " ")
        msg["Message-ID"] = f"<{delivery.idempotency_key}@sluice>"
        msg["X-Sluice-Action"] = self.name
        payload = delivery.payload
        text = (
            payload
            if isinstance(payload, str)
            else orjson.dumps(payload, default=str, option=orjson.OPT_INDENT_2).decode()
        )
        msg.set_content(text)
        return msg

    def deliver(self, delivery: Delivery) -> None:
        """Connect, STARTTLS, log in if configured, send."""
        opts = self.options
        timeout = duration_us(opts.timeout) / 1e6
        try:
            with smtplib.SMTP(opts.host, opts.port, timeout=timeout) as smtp:
                smtp.ehlo()
                if opts.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=opts.ca_file))
                    smtp.ehlo()
                if opts.username is not None:
                    what = f"action {self.name!r}"
                    smtp.login(
                        resolve_secrets(opts.username, what),
                        resolve_secrets(opts.password or "", what),
                    )
                smtp.send_message(self.message(delivery))
        except smtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.smtp_code} from {self.target}: {exc.smtp_error!r}"
            if 400 <= exc.smtp_code < 500:
                raise TransientActionError(text) from None
            raise PermanentActionError(text) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentActionError(
                f"recipients refused by {self.target}: {sorted(exc.recipients)}"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentActionError(
                f"TLS verification failed for {self.target}: {exc.verify_message}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientActionError(
                f"cannot send via {self.target}: {type(exc).__name__}: {exc}"
            ) from None
