"""Channel adapters: how one rendered notification reaches a buyer or a merchant.

An adapter delivers a `Delivery` or raises `ChannelError` saying why it could
not; it keeps nothing between deliveries (each opens its own connection, with
a timeout from the policy), so a relay or endpoint that is down costs one
failed try, which the notify worker records and dramatiq retries. Adapters
never see more personal data than they need: only the email adapter gets an
address, and nothing here logs it.

Mail that leaves the building is protected as the policy says
(``[notifications.smtp]``): STARTTLS or TLS from the first byte, the relay's
certificate always verified (against the system's authorities or ``ca_file``;
a relay that offers no STARTTLS when it was asked for gets nothing), and a
login whose password is read from the environment variable the policy names —
at each delivery, never logged, and cut out of any error that could quote it.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from policy import NotificationPolicy, SmtpPolicy, WebhookPolicy

__all__ = ["Channel", "ChannelError", "Delivery", "LogChannel", "SmtpChannel", "WebhookChannel", "channel_for",
           "smtp_start_up_problems"]

log = logging.getLogger("disputes.notify")


class ChannelError(Exception):
    """A delivery did not go through; the notify worker records it and tries again later."""


@dataclass(frozen=True)
class Delivery:
    """One notification as a channel sees it."""

    notification_id: int
    template: str
    recipient: str
    recipient_id: str
    language: str
    subject: str
    body: str
    #: The email address (the smtp channel only), from the ticket's contact.
    address: str | None = None
    #: The ``notify.<template>`` event body (the webhook channel posts it as it is).
    event: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    def deliver(self, delivery: Delivery) -> None:
        """Deliver, or raise `ChannelError`."""


class LogChannel:
    """Writes the notification to the ``disputes.notify`` log: the default, needing nothing external."""

    def deliver(self, delivery: Delivery) -> None:
        # One line per notification, so log shippers keep it whole.
        log.info("notify %s to %s %s [%s]: %s | %s", delivery.template, delivery.recipient, delivery.recipient_id,
                 delivery.language, delivery.subject, delivery.body.replace("\n", " / "))


class SmtpChannel:
    """Plain-text UTF-8 email through the configured relay (one SMTP session per message), over TLS and
    with a login when the policy says so."""

    def __init__(self, settings: SmtpPolicy, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ

    def message(self, delivery: Delivery) -> EmailMessage:
        if not delivery.address:
            raise ChannelError("no email address to send to")
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = delivery.address
        message["Subject"] = delivery.subject  # encoded as RFC 2047 UTF-8 when not ASCII
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(idstring=f"notification-{delivery.notification_id}")
        message["X-Op-Notification"] = f"{delivery.template}/{delivery.notification_id}"
        message.set_content(delivery.body, subtype="plain", charset="utf-8", cte="base64")  # 7-bit safe on any relay
        message["Content-Language"] = "zh-CN" if delivery.language == "zh" else delivery.language  # after set_content
        return message

    def deliver(self, delivery: Delivery) -> None:
        s = self.settings
        message = self.message(delivery)
        password = self.password()
        where = f"smtp {s.host}:{s.port}" + ("" if s.tls == "none" else f" ({s.tls} TLS)")
        try:
            with self.session() as smtp:
                if s.username:
                    smtp.login(s.username, password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as error:
            reply = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else ""
            reason = f"{where}: the relay refused the login of {s.username!r}: {error.smtp_code} {reply}"
            raise ChannelError(self._redacted(reason, password)[:500]) from None
        except (smtplib.SMTPException, OSError) as error:  # ssl.SSLError (a certificate refused) is an OSError
            reason = f"{where}: {type(error).__name__}: {error}"
            raise ChannelError(self._redacted(reason, password)[:500]) from None

    def session(self) -> smtplib.SMTP:
        """A connected session, protected as ``tls`` says: the caller sends and closes it."""
        s = self.settings
        timeout = s.timeout.seconds()
        if s.tls == "implicit":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=self.tls_context())
        smtp = smtplib.SMTP(s.host, s.port, timeout=timeout)
        if s.tls == "starttls":
            try:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):  # never fall back to sending in clear
                    raise ChannelError(f"smtp {s.host}:{s.port} does not offer STARTTLS, which "
                                       f"notifications.smtp.tls asks for: nothing sent")
                smtp.starttls(context=self.tls_context())
                smtp.ehlo()
            except BaseException:
                smtp.close()
                raise
        return smtp

    def tls_context(self) -> ssl.SSLContext:
        """Verifying, always: the relay's certificate must chain to the system's authorities or to
        ``ca_file``'s, and name the host the policy names."""
        context = ssl.create_default_context(cafile=self.settings.ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def password(self) -> str:
        """The login's password, from the environment variable the policy names ("" without a login)."""
        s = self.settings
        if not s.username:
            return ""
        password = self.environ.get(s.password_env, "")
        if not password:
            raise ChannelError(f"smtp {s.host}:{s.port}: the environment variable {s.password_env} "
                               f"(notifications.smtp.password_env) is not set: not logging in")
        return password

    def _redacted(self, text: str, password: str) -> str:
        """`text` with the password cut out, as itself and as the AUTH PLAIN / LOGIN exchanges encode it."""
        if not password:
            return text
        user = self.settings.username
        forms = {password, base64.b64encode(password.encode()).decode(),
                 base64.b64encode(f"\0{user}\0{password}".encode()).decode()}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "<redacted>")
        return text


def smtp_start_up_problems(settings: NotificationPolicy, environ: Mapping[str, str] | None = None) -> list[str]:
    """What the environment lacks for the mail the policy configures, found when the notify worker starts
    (not when the policy file is checked, which may happen on another machine): the password's variable
    unset, a CA file that cannot be read. Nothing when no recipient is mailed."""
    if not any("smtp" in chosen for chosen in settings.channels.values()):
        return []
    s, environ = settings.smtp, os.environ if environ is None else environ
    problems = []
    if s.username and not environ.get(s.password_env):
        problems.append(f"notifications.smtp.password_env: the environment variable {s.password_env} is not set "
                        f"(it holds the password of {s.username!r})")
    if s.ca_file and s.tls != "none":
        try:
            ssl.create_default_context(cafile=s.ca_file)
        except (OSError, ValueError) as error:  # missing, unreadable, or no certificate in it (ssl.SSLError)
            problems.append(f"notifications.smtp.ca_file: cannot use {s.ca_file}: {error}")
    return problems


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: urllib would re-send a POST as a bodiless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookChannel:
    """POSTs the ``notify.*`` event body as JSON; any answer but 2xx (or no answer in time) fails."""

    def __init__(self, settings: WebhookPolicy) -> None:
        self.settings = settings
        self.opener = urllib.request.build_opener(_NoRedirects)

    def deliver(self, delivery: Delivery) -> None:
        url = self.settings.url
        if not url:
            raise ChannelError("no webhook url configured (notifications.webhook.url)")
        request = urllib.request.Request(
            url, data=json.dumps(delivery.event, ensure_ascii=False).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "disputes-notify/1",
                     "X-Op-Event-Id": str(delivery.event.get("event_id", ""))})
        try:
            with self.opener.open(request, timeout=self.settings.timeout.seconds()) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            raise ChannelError(f"webhook answered {error.code} {error.reason}"[:500]) from error
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise ChannelError(f"webhook unreachable: {type(error).__name__}: {error}"[:500]) from error
        if not 200 <= status < 300:
            raise ChannelError(f"webhook answered {status}")


def channel_for(name: str, settings: NotificationPolicy) -> Channel:
    """The adapter for a channel name of the policy (``log``, ``smtp``, ``webhook``)."""
    if name == "log":
        return LogChannel()
    if name == "smtp":
        return SmtpChannel(settings.smtp)
    if name == "webhook":
        return WebhookChannel(settings.webhook)
    raise ChannelError(f"unknown channel {name!r}")
