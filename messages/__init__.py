"""Wire messages: what crosses the system's edges, as marshmallow schemas, with no I/O.

``intake`` reads ``op.intake`` bodies (SPEC §4), ``events`` builds ``op.events``
bodies (SPEC §5), ``signing`` checks ``x-op-signature``, ``fields`` holds the
strict field types they share. Everything else in the system imports from here.
"""

from messages.events import (
    LEDGER_KINDS, TICKET_STATES, EventInvalid, LedgerEvent, NotifyEvent, TicketEvent,
    event_body, ledger_body, ledger_routing_key, notify_body, notify_routing_key,
    ticket_routing_key,
)
from messages.intake import (
    INTAKE_ROUTING_KEYS, SCHEMA_VERSION, SCHEMAS, IntakeInvalid, TicketRef, parse_intake,
    ticket_ref,
)
from messages.signing import SIGNATURE_HEADER, sign, verify

__all__ = [
    "INTAKE_ROUTING_KEYS", "LEDGER_KINDS", "SCHEMAS", "SCHEMA_VERSION", "SIGNATURE_HEADER",
    "TICKET_STATES", "EventInvalid", "IntakeInvalid", "LedgerEvent", "NotifyEvent",
    "TicketEvent", "TicketRef", "event_body", "ledger_body", "ledger_routing_key",
    "notify_body", "notify_routing_key", "parse_intake", "sign", "ticket_ref",
    "ticket_routing_key", "verify",
]
