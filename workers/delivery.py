"""The ``notify`` queue's worker: delivering notifications to buyers and merchants through the channel adapters.

Why a queue of its own: a mail relay or a merchant's webhook that is down must
never hold up a ticket. The change that calls for notifications commits their
`Notification` rows with the ticket (`models.notification`) and sends one
message naming them; the rows are the work items — no dispatch row. This
worker delivers them with the fewest round trips, each statement committed on
its own:

1. one ``UPDATE ... RETURNING`` claims a try of those still pending (a
   redelivered message finds them sent and delivers nothing twice);
2. each goes through its channel (one read of the tickets' contact for email,
   one of the events for webhooks, when the message has such notifications);
3. one ``UPDATE`` marks the delivered ones sent — only after their channel
   returned (at least once).

A failed try is recorded on its notification (attempts, last error) and
raised, so dramatiq retries the message with backoff — bounded on the actor:
``max_attempts`` of ``[notifications]`` in all. After the last try the
notification is marked ``failed``, which `disputes ticket show` lists; the
ticket has long moved on. A message lost on the way is re-sent by the
scheduler's reconciler (`scheduler.reconciler.redrive_stale_notifications`).

A message of the previous version names a ``deliver`` dispatch (its payload a
`models.dispatches.NotificationDelivery`): its notification is delivered the
same way, and the dispatch marked done once it is no longer pending.

Run: ``dramatiq workers.notify --queues notify`` (the entry is `workers.notify`). It
will not start when the environment lacks what the policy's mail needs (the
password's variable, a readable ``ca_file``): every try would fail otherwise.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from workers.channels import ChannelError, Delivery, channel_for, smtp_start_up_problems
from policy import NotificationPolicy, Policy, PolicyError
from disputes.settings import NOTIFY_MAX_BACKOFF_MS, NOTIFY_MIN_BACKOFF_MS
from disputes.wiring import App
from models.base import utcnow
from models.dispatches import NotificationDelivery
from models.errors import DisputesError
from models.notification import Notification, claim, email_of, mark_sent, record_failure, release
from models.outbox import Dispatch, OutboxEvent
from models.ticket import Ticket
from models.workflow import Outcome
from workers.base import StageWorker, mark_done

log = logging.getLogger("disputes.notify")


#: Relays on this host, where plain SMTP never crosses the network.
LOCAL_RELAYS = ("localhost", "127.0.0.1", "::1", "[::1]")


class DeliveryFailed(DisputesError):
    """A try failed and another is due: raised so that dramatiq retries the message with backoff
    (not a `Refused`: the next try may well succeed)."""


class NotifyWorker(StageWorker):
    """Delivers the notifications a message names; retried by dramatiq, bounded by the policy."""

    def __init__(self, app: App, queue: str = "notify") -> None:
        super().__init__(app, queue)
        settings = app.policy.notifications
        problems = smtp_start_up_problems(settings)
        if problems:
            raise PolicyError(problems)
        mailed = [recipient for recipient, chosen in settings.channels.items() if "smtp" in chosen]
        if mailed and settings.smtp.tls == "none" and settings.smtp.host not in LOCAL_RELAYS:
            log.warning("notifications to %s go to the mail relay %s in clear (notifications.smtp.tls = \"none\"): "
                        "set tls to \"starttls\" or \"implicit\" for a relay across the network",
                        " and ".join(mailed), settings.smtp.host)

    def handle(self, first_id: int, notifications: Sequence[int] | None = None,  # type: ignore[override]
               **carried: Any) -> None:
        """A message names its notifications (`models.notification.NotificationRef`); one without
        them is the previous version's, naming a ``deliver`` dispatch (routed to `on_deliver`)."""
        if notifications is None:
            super().handle(first_id, **carried)
            return  # (a new message's `ticket_id` is for the log context only)
        self.deliver(notifications)

    def deliver(self, ids: Sequence[int]) -> int:
        """Deliver the notifications of `ids` still pending; returns how many were tried. Raises
        `DeliveryFailed` when a try failed and another is due (the sent ones are marked first)."""
        settings = self.app.policy.notifications
        claimed = claim(ids, settings.max_attempts, utcnow())
        if not claimed:
            return 0  # all sent or given up already: a redelivery
        try:
            retrying = self._try_all(claimed, settings)
        except BaseException:  # cut short (a time limit, the database): free the claim for the retry
            release([n.id for n in claimed])
            raise
        if retrying:
            raise DeliveryFailed("; ".join(retrying)[:2000])
        return len(claimed)

    def _try_all(self, claimed: Sequence[Notification], settings: NotificationPolicy) -> list[str]:
        """Try each claimed notification, record the failures, mark the rest sent; returns what is
        to be retried."""
        context = DeliveryContext.read(claimed)
        sent: list[int] = []
        retrying: list[str] = []
        for notification in claimed:
            reason = try_channel(notification, context, settings)
            if reason is None:
                sent.append(notification.id)
            elif record_failure(notification, reason, settings.max_attempts, utcnow()):
                log.error("notification %s (%s to %s %s by %s) failed for good: %s", notification.id,
                          notification.template, notification.recipient, notification.recipient_id,
                          notification.channel, reason)
            else:
                retrying.append(f"notification {notification.id} by {notification.channel}: {reason}")
        mark_sent(sent, utcnow())
        return retrying

    def on_deliver(self, row: Dispatch) -> Outcome | None:
        """A ``deliver`` dispatch of the previous version. A failed try that is not the last raises
        before the dispatch is done, so dramatiq's retry of the message reads it again."""
        tried = self.deliver([row.payload_as(NotificationDelivery).notification_id])
        mark_done(row, "applied" if tried else "stale: the notification is no longer pending")
        return None

    def actor_options(self) -> dict[str, int]:
        """Retries set from the policy rather than the broker's defaults."""
        return retry_options(self.app.policy)


def retry_options(policy: Policy) -> dict[str, int]:
    """dramatiq's per-actor retry options: ``max_attempts`` tries in all, backing off 1 s, 2 s, 4 s… ≤ 20 s."""
    return {"max_retries": policy.notifications.max_attempts - 1, "min_backoff": NOTIFY_MIN_BACKOFF_MS,
            "max_backoff": NOTIFY_MAX_BACKOFF_MS}


def try_channel(notification: Notification, context: "DeliveryContext", settings: NotificationPolicy) -> str | None:
    """One try through the notification's channel: None when it went through, else why not."""
    try:
        channel_for(notification.channel, settings).deliver(context.delivery_of(notification))
    except Exception as error:  # any failure is a failed try, recorded where people look
        return str(error) if isinstance(error, ChannelError) else f"{type(error).__name__}: {error}"
    return None


class DeliveryContext:
    """What the channels of some notifications need beyond their rows, read once for them all: the
    tickets' contact (email), the ``notify.*`` event bodies (webhook). Nothing is read for the log."""

    def __init__(self, contacts: dict[int, Ticket], events: dict[int, dict]) -> None:
        self.contacts = contacts
        self.events = events

    @classmethod
    def read(cls, notifications: Sequence[Notification]) -> "DeliveryContext":
        ticket_ids = {n.ticket_id for n in notifications if n.channel == "smtp"}
        outbox_ids = {n.outbox_id for n in notifications if n.channel == "webhook" and n.outbox_id is not None}
        contacts = ({t.id: t for t in Ticket.select(Ticket.id, Ticket.contact).where(Ticket.id.in_(ticket_ids))}
                    if ticket_ids else {})
        events = ({e.id: e.body for e in OutboxEvent.select(OutboxEvent.id, OutboxEvent.body)
                   .where(OutboxEvent.id.in_(outbox_ids))} if outbox_ids else {})
        return cls(contacts, events)

    def delivery_of(self, notification: Notification) -> Delivery:
        """What the channel needs: the text, the address (email) or the event body (webhook)."""
        address = event = None
        if notification.channel == "smtp":
            ticket = self.contacts.get(notification.ticket_id)
            address = email_of(ticket, notification.recipient) if ticket is not None else None
        elif notification.channel == "webhook":
            event = self.events.get(notification.outbox_id)
            if event is None:
                raise ChannelError(f"the notify event (outbox row {notification.outbox_id}) is gone")
        return Delivery(notification.id, notification.template, notification.recipient, notification.recipient_id,
                        notification.language, notification.subject, notification.body, address, event or {})

