"""Outbound event bodies for the ``op.events`` exchange (SPEC §5).

Three shapes leave the system: ``ticket.<to_state>`` for every committed
state change (the creation included, ``from_state`` null), ``ledger.<kind>``
for money movements (each with an idempotency key so payments applies it
exactly once), and ``notify.<template>`` for messages to buyers and merchants.

Why we validate bodies we build ourselves: they are a contract other teams
code against, and once written to the outbox they are published as they are.
Building each body through one validated helper catches a naive datetime, a
float amount or a ``Decimal`` in ``data`` at the line that made it, inside the
transaction, instead of in a downstream consumer. Outbound schemas RAISE on
unknown fields for the same reason: nothing undocumented goes out by typo.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from messages.fields import (
    AwareDateTime, Currency, Identifier, JsonObject, Money, PositiveId, Text, flatten_errors,
)

#: The ticket states of SPEC §3, by their contract names.
TICKET_STATES = (
    "negotiating", "awaiting_confirmation", "intercepting", "awaiting_takeover", "stage1",
    "awaiting_evidence", "stage2", "stage3", "stage4", "awaiting_payment",
    "resolved", "closed", "withdrawn",
)
#: Money movements of SPEC §5 (routing key ``ledger.<kind>``).
#: SPEC §5 names the first three; ``debt_settled`` tells payments to recover an advance from a new balance.
LEDGER_KINDS = ("refund_deducted", "platform_advance", "complaint_fee_paid", "debt_settled")
#: Who receives a notification.
RECIPIENTS = ("user", "merchant")
#: ``system``, ``scheduler``, ``user``, ``merchant`` or ``agent:<id>``.
ACTOR_PATTERN = r"^(system|scheduler|user|merchant|agent:[^\s:]{1,64})$"
#: A template name is one routing-key word.
TEMPLATE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class EventInvalid(ValueError):
    """An outbound body that breaks the contract: a bug in the code that built it."""

    def __init__(self, reasons: Mapping[str, list[str]]) -> None:
        super().__init__({key: list(value) for key, value in reasons.items()})
        self.reasons: dict[str, list[str]] = self.args[0]

    def __str__(self) -> str:
        return "; ".join(f"{key}: {' '.join(value)}" for key, value in self.reasons.items())


class _Event(Schema):
    """What every outbound body carries: which event, which ticket, when."""

    class Meta:
        unknown = RAISE

    event_id = Identifier(max_length=64, required=True)
    ticket_id = PositiveId(required=True)
    source = Identifier(required=True)
    external_ref = Identifier(required=True)
    at = AwareDateTime(required=True)
    data = JsonObject(required=True)


class TicketEvent(_Event):
    """``ticket.<to_state>``: one committed state change."""

    from_state = fields.String(required=True, allow_none=True, validate=validate.OneOf(TICKET_STATES))
    to_state = fields.String(required=True, validate=validate.OneOf(TICKET_STATES))
    actor = Text(max_length=80, required=True, validate=validate.Regexp(ACTOR_PATTERN))
    action = Identifier(max_length=64, required=True)


class LedgerEvent(_Event):
    """``ledger.<kind>``: a money movement, applied downstream exactly once by its key."""

    kind = fields.String(required=True, validate=validate.OneOf(LEDGER_KINDS))
    idempotency_key = Identifier(required=True)
    merchant_id = Identifier(accept_int=True, required=True)
    user_id = Identifier(accept_int=True, required=True)
    amount = Money(required=True)
    currency = Currency(required=True)
    #: Increases per merchant: what a balance report's ``applied_through`` names (SPEC §4).
    sequence = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class NotifyEvent(_Event):
    """``notify.<template>``: tell a buyer or a merchant something they must know."""

    template = Text(max_length=64, required=True, validate=validate.Regexp(TEMPLATE_PATTERN))
    recipient = fields.String(required=True, validate=validate.OneOf(RECIPIENTS))
    recipient_id = Identifier(accept_int=True, required=True)


_TICKET_EVENT, _LEDGER_EVENT, _NOTIFY_EVENT = TicketEvent(), LedgerEvent(), NotifyEvent()


def ticket_routing_key(to_state: str) -> str:
    """The routing key of a state change: ``ticket.stage3``."""
    return f"ticket.{to_state}"


def ledger_routing_key(kind: str) -> str:
    """The routing key of a money movement: ``ledger.refund_deducted``."""
    return f"ledger.{kind}"


def notify_routing_key(template: str) -> str:
    """The routing key of a notification: ``notify.<template>``."""
    return f"notify.{template}"


def event_body(
    *, ticket_id: int, source: str, external_ref: str, from_state: str | None, to_state: str,
    actor: str, action: str, at: dt.datetime, data: Mapping[str, Any] | None = None,
    event_id: str | None = None, check: bool = True,
) -> dict[str, Any]:
    """Build and validate a ``ticket.*`` body, JSON-ready (``at`` as ISO 8601 with zone). The state
    change itself passes ``check=False``: it builds the body from the audit row it just wrote, every
    field of which is ours or was validated on its way in, and a schema pass per change costs more
    than the rest of the body (`check_event_body` holds the tests to the contract instead)."""
    body = _common(event_id, ticket_id, source, external_ref, at, data)
    body.update(from_state=from_state, to_state=to_state, actor=actor, action=action)
    return _validated(_TICKET_EVENT, body) if check else body


def ledger_body(
    *, kind: str, idempotency_key: str, ticket_id: int, source: str, external_ref: str,
    merchant_id: str, user_id: str, amount: int, currency: str, at: dt.datetime, sequence: int,
    data: Mapping[str, Any] | None = None, event_id: str | None = None,
) -> dict[str, Any]:
    """Build and validate a ``ledger.*`` body; the caller owns the idempotency key and the sequence."""
    body = _common(event_id, ticket_id, source, external_ref, at, data)
    body.update(
        kind=kind, idempotency_key=idempotency_key, merchant_id=merchant_id, user_id=user_id,
        amount=amount, currency=currency, sequence=sequence,
    )
    return _validated(_LEDGER_EVENT, body)


def notify_body(
    *, template: str, recipient: str, recipient_id: str, ticket_id: int, source: str,
    external_ref: str, at: dt.datetime, data: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Build and validate a ``notify.*`` body."""
    body = _common(event_id, ticket_id, source, external_ref, at, data)
    body.update(template=template, recipient=recipient, recipient_id=recipient_id)
    return _validated(_NOTIFY_EVENT, body)


def _common(
    event_id: str | None, ticket_id: int, source: str, external_ref: str, at: dt.datetime,
    data: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "event_id": event_id if event_id is not None else str(uuid.uuid4()),
        "ticket_id": ticket_id,
        "source": source,
        "external_ref": external_ref,
        "at": at.isoformat() if isinstance(at, dt.datetime) else at,
        "data": dict(data) if data is not None else {},
    }


def check_event_body(routing_key: str, body: Mapping[str, Any]) -> dict[str, list[str]]:
    """What is wrong with an ``op.events`` body under its routing key (SPEC §5); empty when nothing."""
    kind = routing_key.split(".", 1)[0]
    schema = {"ticket": _TICKET_EVENT, "ledger": _LEDGER_EVENT, "notify": _NOTIFY_EVENT}.get(kind)
    if schema is None:
        return {"_routing_key": [f"not an op.events routing key: {routing_key!r}"]}
    fields_of = set(schema.fields)
    errors = flatten_errors(schema.validate({k: v for k, v in body.items() if k in fields_of}))
    unknown = sorted(set(body) - fields_of - {"version"})
    if unknown:
        errors["_unknown"] = [f"fields the contract does not name: {unknown}"]
    return errors


def _validated(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    errors = schema.validate(body)
    if errors:
        raise EventInvalid(flatten_errors(errors))
    return body
