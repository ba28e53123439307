"""Channel adapters: how one rendered notification reaches a buyer or a merchant.

An adapter delivers a `Delivery` or raises `ChannelError` saying why it could
not; it keeps nothing between deliveries (each opens its own connection, with
a timeout from the policy), so a relay or endpoint that is down costs one
failed try, which the notify worker records and dramatiq retries. Adapters
never see more personal data than they need: only the email adapter gets an
address, and nothing here logs it.
"""
from __future__ import annotations

import http.client
import json
import logging
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from policy import NotificationPolicy, SmtpPolicy, WebhookPolicy

__all__ = ["Channel", "ChannelError", "Delivery", "LogChannel", "SmtpChannel", "WebhookChannel", "channel_for"]

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
    """Plain-text UTF-8 email through the configured relay (one SMTP session per message)."""

    def __init__(self, settings: SmtpPolicy) -> None:
        self.settings = settings

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
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout.seconds()) as smtp:
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as error:
            raise ChannelError(f"smtp {s.host}:{s.port}: {type(error).__name__}: {error}"[:500]) from error


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
