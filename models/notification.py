"""Telling buyers and merchants what they must know of a change, in the change's own transaction.

`notify_parties` is called by `models.workflow` for every committed change. It
decides from the audit row (action, from and to state) and the change's data
which templates go to whom, renders them in the recipient's language, and
writes for each (template, recipient) one ``notify.<template>`` outbox event
(SPEC §5; contact data masked) and one `Notification` row per channel — all the
change's rows in one ``INSERT``. The `Notification` row is itself the work item
(no dispatch row: "to be delivered" is its ``pending`` status): the change
returns one `NotificationRef` naming its pending notifications, sent after
commit as one message to the ``notify`` queue. Delivery happens in
`workers.delivery`, so a channel that is down never holds up the ticket; a
message lost on the way is re-sent by `scheduler.reconciler.redrive_stale_notifications`.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import quote
from zoneinfo import ZoneInfo

import peewee

from policy.notifications import packaged_templates
from policy.options import money_label
from messages.events import notify_body, notify_routing_key
from models.base import BaseModel, UtcDateTimeField, database, utcnow
from models.outbox import OutboxEvent

if TYPE_CHECKING:
    from policy import Policy
    from models.audit import TicketEvent
    from models.change import Change
    from models.ticket import Ticket

log = logging.getLogger("disputes.notify")

#: Notification statuses: waiting for (another) try, a try under way (claimed by a worker), delivered,
#: given up after the last try, or never tried because the channel cannot reach the recipient (an
#: email channel without an address).
PENDING, SENDING, SENT, FAILED, SKIPPED = "pending", "sending", "sent", "failed", "skipped"
#: Not delivered yet, and not given up on: what the reconciler watches.
UNDELIVERED = (PENDING, SENDING)
BOTH = ("user", "merchant")
NEGOTIATION_STATES = ("negotiating", "awaiting_confirmation", "intercepting")
_LIST_SEPARATOR = {"zh": "、", "en": ", "}


class Notification(BaseModel):
    """One message to one recipient through one channel, and how its delivery went."""

    ticket_id = peewee.IntegerField(index=True)
    template = peewee.CharField(max_length=64)
    recipient = peewee.CharField(max_length=16)  # user | merchant
    recipient_id = peewee.CharField(max_length=128)
    channel = peewee.CharField(max_length=16)
    language = peewee.CharField(max_length=8)
    subject = peewee.CharField(max_length=500)
    body = peewee.TextField()
    #: The ``notify.<template>`` outbox row this delivers (the webhook posts its body).
    outbox_id = peewee.IntegerField(null=True)
    status = peewee.CharField(max_length=16, default=PENDING, index=True)
    attempts = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    #: When the last try began or failed, or the reconciler last re-sent it (its re-drive clock).
    last_attempt_at = UtcDateTimeField(null=True)
    sent_at = UtcDateTimeField(null=True)


class NotificationRef(int):
    """Notifications just written, as one message to the ``notify`` queue (`models.sending`): the
    ref is the first one's id and its message names them all — one message per change, however
    many recipients and channels, so the worker claims and closes them in one statement each."""

    queue = "notify"
    #: No dispatch row to mark unsent when a send fails: the reconciler re-sends pending notifications.
    tracks_sending = False
    ids: tuple[int, ...]
    ticket_id: int

    def __new__(cls, ids: Sequence[int], ticket_id: int) -> "NotificationRef":
        ref = super().__new__(cls, ids[0])
        ref.ids = tuple(ids)
        ref.ticket_id = ticket_id
        return ref

    @property
    def id(self) -> int:
        return int(self)

    def message_kwargs(self) -> dict[str, Any]:
        # The ticket is for the worker's log context (which would otherwise look the message up).
        return {"notifications": list(self.ids), "ticket_id": self.ticket_id}


@dataclass(frozen=True)
class Planned:
    """A template to send to some recipients; `outcome` names the settlement phrase."""

    template: str
    recipients: tuple[str, ...]
    outcome: str | None = None


def plan(action: str, from_state: str | None, to_state: str, data: dict[str, Any]) -> list[Planned]:
    """Which templates a change calls for, and for whom (nothing for most changes)."""
    moved = from_state != to_state
    out: list[Planned] = []
    if moved and to_state == "awaiting_confirmation" and action in ("direct_refund", "negotiated_reject"):
        out.append(Planned("settlement", ("user",), action))
    elif moved and to_state == "intercepting":
        out.append(Planned("settlement", ("user",), "intercept_48h"))
    elif moved and to_state == "awaiting_takeover" and from_state in NEGOTIATION_STATES:
        out.append(Planned("settlement", BOTH, "escalated"))
    elif moved and to_state == "resolved":
        out.append(Planned("settlement", BOTH, "resolved"))
    if action == "request_evidence" and to_state == "awaiting_evidence":
        out.append(Planned("evidence_requested", tuple(p for p in BOTH if p in (data.get("parties") or ()))))
    if action == "judge":
        out.append(Planned("judgment", BOTH))
    if to_state == "awaiting_payment" and data.get("awaiting") == "voucher":
        out.append(Planned("payment_awaited", ("merchant",)))
    elif action == "judge" and to_state == "awaiting_payment":
        out.append(Planned("goods_return", ("user",)))
    if data.get("paid") and "complaint_fee" not in data:
        out.append(Planned("refund", ("user",)))
    if data.get("paid") and data.get("complaint_fee"):
        out.append(Planned("complaint_fee", ("user",)))
    if moved and to_state == "closed":
        out.append(Planned("closed", BOTH))
    if moved and to_state in ("closed", "resolved"):
        out.append(Planned("survey", ("user",)))
    return [p for p in out if p.recipients]


def notify_parties(change: "Change", event: "TicketEvent") -> list[int]:
    """Write the notifications `change` calls for; returns what to send after commit (one
    `NotificationRef`, or nothing).

    They are written in a savepoint: a notification that cannot be built (a bug, a broken template)
    is logged loudly and left out, and never holds up the change that called for it."""
    try:
        planned = plan(event.action, event.from_state, event.to_state, change.data)
        if not planned:
            return []  # most changes concern no party: no savepoint, no round trip
        with database.atomic():
            return _notify_all(change, planned)
    except Exception:
        log.exception("ticket %s: the notifications of '%s' could not be written", change.ticket.id, event.action)
        return []


def _notify_all(change: "Change", planned: list[Planned]) -> list[int]:
    t, policy = change.ticket, change.policy
    if any(p.template == "survey" for p in planned) and _surveyed(t.id):
        planned = [p for p in planned if p.template != "survey"]  # one survey per ticket, even after an appeal
    rows: list[dict[str, Any]] = []
    for item in planned:
        for recipient in item.recipients:
            rows += _notify(change, item, recipient, _facts(t, item, change.data, policy))
    return _write(rows)


def _notify(change: "Change", item: Planned, recipient: str, facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Write the ``notify.<template>`` event for `recipient`; returns its notification rows to insert."""
    t, settings = change.ticket, change.policy.notifications
    language = settings.language  # tickets carry no language of their own
    text = packaged_templates().render(item.template, recipient, language, _localized(facts, language,
                                                                                         change.policy))
    channels = settings.channels.get(recipient, ())
    recipient_id = t.user_id if recipient == "user" else t.merchant_id
    data: dict[str, Any] = {"version": t.version, "language": language, "subject": text.subject,
                            "text": text.body, "channels": list(channels), "facts": facts}
    contact = masked_contact(t.contact) if recipient == "user" else masked_merchant_contact(t.contact)
    if contact:
        data["contact"] = contact
    body = notify_body(template=item.template, recipient=recipient, recipient_id=recipient_id, ticket_id=t.id,
                       source=t.source, external_ref=t.external_ref, at=change.now, data=data,
                       event_id=str(uuid.uuid4()))
    outbox = OutboxEvent.create(ticket_id=t.id, routing_key=notify_routing_key(item.template), body=body,
                                created_at=change.now)
    rows: list[dict[str, Any]] = []
    for channel in channels:
        unreachable = channel == "smtp" and not email_of(t, recipient)
        rows.append({"ticket_id": t.id, "template": item.template, "recipient": recipient,
                     "recipient_id": recipient_id, "channel": channel, "language": language,
                     "subject": text.subject, "body": text.body, "outbox_id": outbox.id,
                     "status": SKIPPED if unreachable else PENDING, "attempts": 0, "created_at": change.now,
                     "last_error": f"no email address for the {recipient}" if unreachable else None})
    return rows


def _write(rows: list[dict[str, Any]]) -> list[int]:
    """All of a change's notifications in one ``INSERT``; one ref names those to deliver."""
    if not rows:
        return []
    written = Notification.insert_many(rows).returning(Notification.id, Notification.status).execute()
    pending = sorted(row.id for row in written if row.status == PENDING)  # RETURNING promises no order
    return [NotificationRef(pending, rows[0]["ticket_id"])] if pending else []


def _surveyed(ticket_id: int) -> bool:
    return (OutboxEvent.select().where((OutboxEvent.ticket_id == ticket_id)
                                       & (OutboxEvent.routing_key == notify_routing_key("survey"))).exists())


def _facts(t: "Ticket", item: Planned, data: dict[str, Any], policy: "Policy") -> dict[str, Any]:
    """What the template says, as plain values (the event carries them; `_localized` words them)."""
    facts: dict[str, Any] = {"ref": t.ref, "ticket_id": t.id, "order_id": t.order_id}
    if data.get("due_at"):
        facts["due_at"] = data["due_at"]
    if item.template == "evidence_requested":
        facts.update(items=[i for i in data.get("items") or [] if isinstance(i, str)], round=data.get("round"))
    if item.template == "judgment":
        facts.update(liability=t.liability, remedy=t.remedy)
    amount = _amount(t, item.template, data)
    if amount is not None:
        facts.update(amount=amount, currency=t.currency)
    if item.outcome:
        facts["outcome"] = item.outcome
    if item.template == "survey":
        code = survey_code(t)
        facts.update(survey_code=code, survey_url=policy.notifications.survey_url.format(
            code=quote(code), ticket_id=t.id, ref=quote(t.ref, safe="")))
    return {key: value for key, value in facts.items() if value is not None}


def _amount(t: "Ticket", template: str, data: dict[str, Any]) -> int | None:
    """The money a template speaks of, in minor units of the ticket's currency."""
    if template == "refund":
        return data.get("paid")
    if template == "complaint_fee":
        return data.get("complaint_fee")
    if template == "settlement":
        return data.get("refund_amount")
    if template == "judgment":
        return t.refund_amount
    if template in ("payment_awaited", "goods_return"):  # what is still owed to the buyer
        return max(0, (t.refund_amount or 0) - (t.refunded_amount or 0))
    return None


def _localized(facts: dict[str, Any], language: str, policy: "Policy") -> dict[str, str]:
    words = {key: str(value) for key, value in facts.items() if key not in ("items", "amount", "currency")}
    if "due_at" in facts:
        zone = policy.calendar.zone
        due = datetime.fromisoformat(facts["due_at"]).astimezone(ZoneInfo(zone))
        words["deadline"] = f"{due:%Y-%m-%d %H:%M} ({zone})"
    if "items" in facts:
        words["items"] = _LIST_SEPARATOR[language].join(
            policy.label("evidence_kind", kind, language) for kind in facts["items"])
    for code_list in ("liability", "remedy"):
        if code_list in facts:
            words[code_list] = policy.label(code_list, facts[code_list], language)
    if "amount" in facts:
        words["amount"] = money_label(facts["amount"], facts["currency"])[language]
    return words


def survey_code(t: "Ticket") -> str:
    """A short code the buyer quotes with the survey (stable per ticket and buyer)."""
    digest = hashlib.sha256(f"survey:{t.id}:{t.user_id}".encode()).hexdigest()[:6].upper()
    return f"{t.id}-{digest}"


def email_of(t: "Ticket", recipient: str) -> str | None:
    """The address the complaint gave for `recipient`: the buyer's ``contact.email``, the merchant's
    ``contact.merchant_email`` (where upstream knows it; otherwise merchants are reached by webhook or log)."""
    contact = t.contact if isinstance(t.contact, dict) else {}
    email = contact.get("email" if recipient == "user" else "merchant_email")
    return email if isinstance(email, str) and "@" in email else None


def masked_contact(contact: object) -> dict[str, str]:
    """``{"email": "a***@example.com", "phone": "*******5678"}``: enough to tell which, never the data."""
    if not isinstance(contact, dict):
        return {}
    masked: dict[str, str] = {}
    email, phone = contact.get("email"), contact.get("phone")
    if isinstance(email, str) and "@" in email:
        masked["email"] = _masked_email(email)
    if isinstance(phone, str) and phone:
        digits = phone.strip()
        masked["phone"] = "*" * max(0, len(digits) - 4) + digits[-4:] if len(digits) > 6 else "***"
    return masked


def masked_merchant_contact(contact: object) -> dict[str, str]:
    """The merchant's address the complaint gave, masked as the buyer's is: ``{"email": "s***@shop.example"}``."""
    email = contact.get("merchant_email") if isinstance(contact, dict) else None
    return {"email": _masked_email(email)} if isinstance(email, str) and "@" in email else {}


def _masked_email(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


# ---- delivery outcomes (the notify worker) ------------------------------------------------------
# Each is one statement, committed on its own: a try needs no transaction around it.

def claim(ids: Sequence[int], max_attempts: int, now: datetime) -> list[Notification]:
    """Begin a try of each notification of `ids` still pending and not out of tries, in one
    ``UPDATE ... RETURNING``; returns them by id. The try is counted before the channel is called,
    so a worker killed mid-delivery still uses one up, and the row is ``sending`` meanwhile, so the
    same message delivered twice at once (a broker redelivery, a re-drive) claims it once. One
    already sent or given up is not returned: a redelivery delivers nothing twice."""
    query = (Notification.update(status=SENDING, attempts=Notification.attempts + 1, last_attempt_at=now)
             .where(Notification.id.in_(list(ids)) & (Notification.status == PENDING)
                    & (Notification.attempts < max_attempts))
             .returning(Notification))
    return sorted(query.execute(), key=lambda n: n.id)


def mark_sent(ids: Sequence[int], now: datetime) -> None:
    """The channel took them: sent (called only after it returned — at least once, never at most;
    sent even if the reconciler took a slow try for lost meanwhile)."""
    if ids:
        (Notification.update(status=SENT, sent_at=now, last_error=None)
         .where(Notification.id.in_(list(ids)) & Notification.status.in_(UNDELIVERED)).execute())


def release(ids: Sequence[int]) -> None:
    """Tries cut short without an outcome (the worker's time limit, a database error): pending
    again, so dramatiq's retry of the message claims them (their try stays counted)."""
    if ids:
        (Notification.update(status=PENDING)
         .where(Notification.id.in_(list(ids)) & (Notification.status == SENDING)).execute())


def record_failure(notification: Notification, error: str, max_attempts: int, now: datetime) -> bool:
    """Record a failed try of a `claim`ed notification. True when it was the last: the notification
    is failed for good. Its clock restarts now, so the reconciler leaves the retry's backoff alone."""
    final = notification.attempts >= max_attempts
    (Notification.update(last_error=error[:2000], last_attempt_at=now, status=FAILED if final else PENDING)
     .where((Notification.id == notification.id) & Notification.status.in_(UNDELIVERED)).execute())
    return final


# ---- re-driving (the scheduler's reconciler) ------------------------------------------------------

def stale(now: datetime, after: float) -> peewee.Expression:
    """Undelivered, and neither tried nor re-sent for `after` seconds: its message was lost (never
    sent, dropped by the broker) or its try never reported (its worker killed). Served by the index
    on ``status``: only undelivered rows are read, and they are few."""
    cutoff = now - timedelta(seconds=after)
    return (Notification.status.in_(UNDELIVERED)
            & ((Notification.last_attempt_at < cutoff)
               | (Notification.last_attempt_at.is_null() & (Notification.created_at < cutoff))))


def give_up_stale(now: datetime, after: float, max_attempts: int) -> list[int]:
    """Stale notifications with no try left are failed (a try that never reported: its worker died);
    returns their ids. One ``UPDATE ... RETURNING``."""
    query = (Notification.update(status=FAILED, last_attempt_at=now, last_error=peewee.fn.COALESCE(
                 Notification.last_error, f"no outcome after {max_attempts} tries"))
             .where(stale(now, after) & (Notification.attempts >= max_attempts))
             .returning(Notification.id))
    return sorted(row.id for row in query.execute())


def take_stale(now: datetime, after: float, max_attempts: int, batch: int) -> list[NotificationRef]:
    """Up to `batch` stale notifications with tries left, pending again (a try that never reported
    is over) and their clock restarted (so the next beat does not send them again), as one ref per
    ticket to re-send. One ``UPDATE ... RETURNING``."""
    oldest = (Notification.select(Notification.id).where(stale(now, after) & (Notification.attempts < max_attempts))
              .order_by(Notification.id).limit(batch))
    query = (Notification.update(status=PENDING, last_attempt_at=now).where(Notification.id.in_(oldest))
             .returning(Notification.id, Notification.ticket_id))
    by_ticket: dict[int, list[int]] = {}
    for row in sorted(query.execute(), key=lambda row: row.id):
        by_ticket.setdefault(row.ticket_id, []).append(row.id)
    return [NotificationRef(ids, ticket_id) for ticket_id, ids in by_ticket.items()]
