"""The ``notify`` queue's worker: delivering notifications to buyers and merchants through the channel adapters.

Why a queue of its own: a mail relay or a merchant's webhook that is down must
never hold up a ticket. The change that calls for a notification commits the
`Notification` rows and their dispatches with the ticket (`models.notification`);
this worker delivers them afterwards, one dispatch each, like any stage: a
dispatch already done is a redelivery and changes nothing, and a delivery that
went through marks its notification sent and its dispatch done in one
transaction. A failed try is recorded on the notification (attempts, last
error) and raised, so dramatiq retries it with backoff — bounded on the actor:
``max_attempts`` of ``[notifications]`` in all. After the last try the
notification is marked ``failed`` and its dispatch dead, which
`disputes ticket show` lists; the ticket has long moved on.

Run: ``dramatiq workers.notify --queues notify`` (the entry is `workers.notify`).
"""
from __future__ import annotations

import logging


from workers.channels import ChannelError, Delivery, channel_for
from policy import Policy
from disputes.settings import NOTIFY_MAX_BACKOFF_MS, NOTIFY_MIN_BACKOFF_MS
from disputes.wiring import App
from models.base import utcnow
from models.dispatches import NotificationDelivery
from models.errors import DisputesError
from models.notification import PENDING, Notification, email_of, mark_sent, record_failure
from models.outbox import Dispatch, OutboxEvent
from models.ticket import Ticket
from models.workflow import Outcome
from workers.base import StageWorker, mark_done

log = logging.getLogger("disputes.notify")


class DeliveryFailed(DisputesError):
    """A try failed and another is due: raised so that dramatiq retries the message with backoff
    (not a `Refused`: the next try may well succeed)."""


class NotifyWorker(StageWorker):
    """Delivers one notification per ``deliver`` dispatch; retried by dramatiq, bounded by the policy."""

    def __init__(self, app: App, queue: str = "notify") -> None:
        super().__init__(app, queue)

    def on_deliver(self, row: Dispatch) -> Outcome | None:
        notification = Notification.get_or_none(id=row.payload_as(NotificationDelivery).notification_id)
        if notification is None or notification.status != PENDING:
            mark_done(row, "stale: the notification is no longer pending")
            return None
        settings = self.app.policy.notifications
        try:
            channel_for(notification.channel, settings).deliver(delivery_of(notification))
        except Exception as error:  # any failure is a failed try, recorded where people look
            reason = str(error) if isinstance(error, ChannelError) else f"{type(error).__name__}: {error}"
            if record_failure(notification, row.id, reason, settings.max_attempts, utcnow()):
                log.error("notification %s (%s to %s %s by %s) failed for good: %s", notification.id,
                          notification.template, notification.recipient, notification.recipient_id,
                          notification.channel, reason)
                return None
            raise DeliveryFailed(f"notification {notification.id} by {notification.channel}: {reason}") from error
        mark_sent(notification, row.id, utcnow())
        return None

    def actor_options(self) -> dict[str, int]:
        """Retries set from the policy rather than the broker's defaults."""
        return retry_options(self.app.policy)


def retry_options(policy: Policy) -> dict[str, int]:
    """dramatiq's per-actor retry options: ``max_attempts`` tries in all, backing off 1 s, 2 s, 4 s… ≤ 20 s."""
    return {"max_retries": policy.notifications.max_attempts - 1, "min_backoff": NOTIFY_MIN_BACKOFF_MS,
            "max_backoff": NOTIFY_MAX_BACKOFF_MS}


def delivery_of(notification: Notification) -> Delivery:
    """What the channel needs: the text, the address (email) or the event body (webhook)."""
    address = event = None
    if notification.channel == "smtp":
        ticket = Ticket.get_or_none(id=notification.ticket_id)
        address = email_of(ticket, notification.recipient) if ticket is not None else None
    elif notification.channel == "webhook":
        outbox = OutboxEvent.get_or_none(id=notification.outbox_id)
        if outbox is None:
            raise ChannelError(f"the notify event (outbox row {notification.outbox_id}) is gone")
        event = outbox.body
    return Delivery(notification.id, notification.template, notification.recipient, notification.recipient_id,
                    notification.language, notification.subject, notification.body, address, event or {})

