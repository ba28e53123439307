"""Telling buyers and merchants what they must know of a change, in the change's own transaction.

`notify_parties` is called by `models.workflow` for every committed change. It
decides from the audit row (action, from and to state) and the change's data
which templates go to whom, renders them in the recipient's language, and
writes for each (template, recipient) one ``notify.<template>`` outbox event
(SPEC §5; contact data masked) and one `Notification` row per channel, each
with a dispatch to the ``notify`` queue. Delivery happens after commit in
`workers.notify`, so a channel that is down never holds up the ticket.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import peewee

from policy.notifications import packaged_templates
from policy.options import money_label
from messages.events import notify_body, notify_routing_key
from models.base import BaseModel, UtcDateTimeField, database, utcnow
from models.dispatches import NotificationDelivery
from models.outbox import Dispatch, OutboxEvent, new_dispatch

if TYPE_CHECKING:
    from policy import Policy
    from models.audit import TicketEvent
    from models.change import Change
    from models.ticket import Ticket

log = logging.getLogger("disputes.notify")

#: Notification statuses: waiting for (another) try, delivered, given up after the last try, or
#: never tried because the channel cannot reach the recipient (an email channel without an address).
PENDING, SENT, FAILED, SKIPPED = "pending", "sent", "failed", "skipped"
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
    last_attempt_at = UtcDateTimeField(null=True)
    sent_at = UtcDateTimeField(null=True)


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
    """Write the notifications `change` calls for; returns the ``notify`` dispatch ids to send after commit.

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
    dispatches: list[int] = []
    for item in planned:
        for recipient in item.recipients:
            dispatches += _notify(change, item, recipient, _facts(t, item, change.data, policy))
    return dispatches


def _notify(change: "Change", item: Planned, recipient: str, facts: dict[str, Any]) -> list[int]:
    t, settings = change.ticket, change.policy.notifications
    language = settings.language  # tickets carry no language of their own
    text = packaged_templates().render(item.template, recipient, language, _localized(facts, language,
                                                                                         change.policy))
    channels = settings.channels.get(recipient, ())
    recipient_id = t.user_id if recipient == "user" else t.merchant_id
    data: dict[str, Any] = {"version": t.version, "language": language, "subject": text.subject,
                            "text": text.body, "channels": list(channels), "facts": facts}
    contact = masked_contact(t.contact) if recipient == "user" else {}
    if contact:
        data["contact"] = contact
    body = notify_body(template=item.template, recipient=recipient, recipient_id=recipient_id, ticket_id=t.id,
                       source=t.source, external_ref=t.external_ref, at=change.now, data=data,
                       event_id=str(uuid.uuid4()))
    outbox = OutboxEvent.create(ticket_id=t.id, routing_key=notify_routing_key(item.template), body=body,
                                created_at=change.now)
    ids: list[int] = []
    for channel in channels:
        unreachable = channel == "smtp" and not email_of(t, recipient)
        row = Notification.create(
            ticket_id=t.id, template=item.template, recipient=recipient, recipient_id=recipient_id,
            channel=channel, language=language, subject=text.subject, body=text.body, outbox_id=outbox.id,
            status=SKIPPED if unreachable else PENDING, created_at=change.now,
            last_error=f"no email address for the {recipient}" if unreachable else None)
        if not unreachable:
            ids.append(new_dispatch("notify", NotificationDelivery(row.id), t.id))
    return ids


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
    """The address the complaint gave (the buyer's); merchants are reached by webhook or log."""
    contact = t.contact if isinstance(t.contact, dict) else {}
    email = contact.get("email") if recipient == "user" else None
    return email if isinstance(email, str) and "@" in email else None


def masked_contact(contact: object) -> dict[str, str]:
    """``{"email": "a***@example.com", "phone": "*******5678"}``: enough to tell which, never the data."""
    if not isinstance(contact, dict):
        return {}
    masked: dict[str, str] = {}
    email, phone = contact.get("email"), contact.get("phone")
    if isinstance(email, str) and "@" in email:
        local, _, domain = email.rpartition("@")
        masked["email"] = f"{local[:1]}***@{domain}"
    if isinstance(phone, str) and phone:
        digits = phone.strip()
        masked["phone"] = "*" * max(0, len(digits) - 4) + digits[-4:] if len(digits) > 6 else "***"
    return masked


# ---- delivery outcomes (the notify worker) ------------------------------------------------------

def mark_sent(notification: Notification, dispatch_id: int, now: datetime) -> None:
    """The delivery went through: the notification and its dispatch are done, in one transaction."""
    with database.atomic():
        (Notification.update(status=SENT, sent_at=now, last_attempt_at=now, attempts=Notification.attempts + 1,
                             last_error=None)
         .where((Notification.id == notification.id) & (Notification.status == PENDING)).execute())
        (Dispatch.update(done_at=now, outcome="applied")
         .where((Dispatch.id == dispatch_id) & Dispatch.done_at.is_null()).execute())


def record_failure(notification: Notification, dispatch_id: int, error: str, max_attempts: int,
                   now: datetime) -> bool:
    """Record a failed try. True when it was the last: the notification is failed and its dispatch
    done (dead); otherwise the dispatch counts as just sent, so the reconciler leaves the retry alone."""
    with database.atomic():
        attempts = notification.attempts + 1
        final = attempts >= max_attempts
        (Notification.update(attempts=Notification.attempts + 1, last_error=error[:2000], last_attempt_at=now,
                             status=FAILED if final else PENDING)
         .where((Notification.id == notification.id) & (Notification.status == PENDING)).execute())
        if final:
            (Dispatch.update(done_at=now, outcome=f"dead: not delivered after {attempts} tries: {error}"[:255])
             .where((Dispatch.id == dispatch_id) & Dispatch.done_at.is_null()).execute())
        else:
            Dispatch.update(sent_at=now).where(Dispatch.id == dispatch_id).execute()
    return final
