"""The outbox: what a committed change must cause, written in the same transaction.

`OutboxEvent` rows become messages on ``op.events`` (relayed in id order, which
per ticket is commit order because changes to one ticket are serialized by its
version). `Dispatch` rows are the dramatiq messages between our own queues; the
handler marks its dispatch done in the transaction of its effect, so a resend
is harmless and a dispatch sent but never done is re-driven by the reconciler.

A dispatch not done is either waiting (sent, nobody has run it yet: its queue's
workers are stopped or behind, or the broker lost the message) or *failing*:
a worker ran it and its handler raised — each such try is recorded on the row
(`failing_outcome`), and after too many the reconciler declares it dead
(`dead_outcome`). Waiting, however long, never makes a dispatch dead.
"""
from __future__ import annotations

import re
from typing import Any

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, utcnow
from models.dispatches import AgentDecision, P, Payload, payload_from_json
from models.errors import BadPayload
from models.prepared import Prepared, insert_row


class OutboxEvent(BaseModel):
    ticket_id = peewee.IntegerField(null=True, index=True)
    routing_key = peewee.CharField(max_length=64)
    body = JSONField()
    created_at = UtcDateTimeField(default=utcnow)
    published_at = UtcDateTimeField(null=True, index=True)


# The relay's read (the oldest unpublished events, in id order) walks this index from its first
# entry, however many published events the table holds or however long the unpublished backlog.
OutboxEvent.add_index(OutboxEvent.index(OutboxEvent.id, name="outbox_event_unpublished",
                                        where=OutboxEvent.published_at.is_null()))


class Dispatch(BaseModel):
    queue = peewee.CharField(max_length=32)
    #: ``arrive`` (the ticket entered the queue's stage), ``act`` (an agent's
    #: decision from the API), ``wake`` (a timer fell due) or ``deliver`` (a notification).
    kind = peewee.CharField(max_length=16)
    ticket_id = peewee.IntegerField(null=True, index=True)
    #: The JSON of the kind's payload type (`models.dispatches`): read it through `payload_object`.
    payload = JSONField()
    created_at = UtcDateTimeField(default=utcnow)
    #: When it was last handed to the broker (None: not sent, or its send failed: the relay sends it).
    sent_at = UtcDateTimeField(null=True)
    #: How many times it was handed to the broker (`models.sending`): not how often a worker ran it,
    #: which the outcome of a failing dispatch counts.
    attempts = peewee.IntegerField(default=0)
    done_at = UtcDateTimeField(null=True)
    #: Once done: ``applied``, ``refused: <reason>``, ``stale: <reason>``, ``no agent available`` or
    #: ``dead: <reason>``. Not done: None, or ``failing: <n> tries failed, last: <error>`` once a
    #: worker's handler raised on it (`failing_outcome`).
    outcome = peewee.CharField(max_length=255, null=True)

    class Meta:
        indexes = ((("done_at", "sent_at"), False),)

    def payload_object(self) -> Payload:
        """The typed payload of this row's kind (`BadPayload` when the stored JSON does not fit it)."""
        return payload_from_json(self.kind, self.payload)

    def payload_as(self, expected: type[P]) -> P:
        """The payload, which must be of type `expected` (``row.payload_as(AgentDecision)``)."""
        payload = self.payload_object()
        if not isinstance(payload, expected):
            raise BadPayload(f"dispatch {self.id} is of kind {self.kind!r}, not {expected.kind!r}")
        return payload

    def message_kwargs(self) -> dict[str, Any]:
        """What its message carries besides the id (`DispatchRef.message_kwargs`)."""
        return carried(self.kind, self.ticket_id, self.payload)


#: The outcome of a dispatch not done whose handler raised (``failing: 3 tries failed, last: ...``).
FAILING = "failing"
#: The outcome of a dispatch given up on (``dead: 10 tries failed, last: ...``).
DEAD = "dead"
_FAILED_TRIES = re.compile(rf"^{FAILING}: (\d+) tr")
_OUTCOME_LENGTH = 255


def failed_tries(outcome: str | None) -> int:
    """How many tries of a dispatch not done failed, by its outcome (0: none, or not failing)."""
    found = _FAILED_TRIES.match(outcome or "")
    return int(found.group(1)) if found else 0


def failing_outcome(tries: int, error: str) -> str:
    """The outcome of a dispatch not done after `tries` failed tries, the last raising `error`
    (one line, already masked: it is shown by the API and `disputes ticket show`)."""
    return f"{FAILING}: {tries} {'try' if tries == 1 else 'tries'} failed, last: {error}"[:_OUTCOME_LENGTH]


def dead_outcome(outcome: str | None) -> str:
    """The outcome of a failing dispatch declared dead: what its failing outcome said."""
    text = outcome or ""
    return (DEAD + text[len(FAILING):] if text.startswith(FAILING + ":") else f"{DEAD}: {text}")[:_OUTCOME_LENGTH]


def carried(kind: str, ticket_id: int | None, payload: Any) -> dict[str, Any]:
    """A dispatch's message carries its row (kind, ticket, payload JSON): the handler claims it with
    one guarded ``UPDATE`` instead of reading it first. The row stays the truth — re-sends are built
    from it — and a message that carries only the id (sent by an older version) is read as before."""
    return {"kind": kind, "ticket_id": ticket_id, "payload": payload}


class DispatchRef(int):
    """A dispatch just written: its id, its queue and what its message carries, so sending it after
    commit, and handling it, need no read of the row."""

    queue: str
    #: ``False`` for kinds of work whose own row is re-sent by its reconciler (nothing to mark unsent).
    tracks_sending = True

    def __new__(cls, dispatch_id: int, queue: str, kind: str, ticket_id: int | None, payload: Any) -> "DispatchRef":
        ref = super().__new__(cls, dispatch_id)
        ref.queue = queue
        ref._kwargs = carried(kind, ticket_id, payload)
        return ref

    @property
    def id(self) -> int:
        return int(self)

    def message_kwargs(self) -> dict[str, Any]:
        return self._kwargs


def new_dispatch(queue: str, payload: Payload, ticket_id: int | None = None) -> DispatchRef:
    """Write a dispatch row to `queue` carrying `payload`; the caller sends it after its transaction
    commits (`models.sending.send_dispatches`). The row's `ticket_id` is the payload's own when it has
    one (`Arrival`, `AgentDecision`).

    The row is written as sent once (`sent_at`, ``attempts = 1``): its writer sends it a moment
    later, and marking it sent afterwards would cost a statement and a commit per message. A send
    that fails marks it unsent again, for the relay's sweep; a writer that dies between its commit
    and the send leaves a row that looks sent, which the reconciler re-sends once it is
    ``OP_REDRIVE_AFTER`` old and still not done."""
    if ticket_id is None:
        ticket_id = getattr(payload, "ticket_id", None)
    now = utcnow()
    data = payload.to_json()
    row = insert_row(Dispatch, queue=queue, kind=payload.kind, ticket_id=ticket_id, payload=data,
                     created_at=now, sent_at=now, attempts=1)
    return DispatchRef(row.id, queue, payload.kind, ticket_id, data)


def decision_in_flight(ticket_id: int, version: int) -> Dispatch | None:
    """An agent's decision on this version of the ticket, accepted by the API and not applied yet:
    only one decision per version can ever apply, and a claim lease must not expire under it."""
    for row in _DECISIONS_NOT_DONE.rows(Dispatch, ticket=ticket_id):
        try:
            decision = row.payload_as(AgentDecision)
        except BadPayload:
            continue  # a decision that cannot be read can never apply (its worker refuses it)
        if decision.expected_version == version:
            return row
    return None


_DECISIONS_NOT_DONE = Prepared(lambda s: Dispatch.select().where(
    (Dispatch.ticket_id == s.ticket) & (Dispatch.kind == "act") & Dispatch.done_at.is_null()))


class Lease(BaseModel):
    """A named lease so that one of several processes does a singleton job (the event relay)."""

    name = peewee.CharField(max_length=64, primary_key=True)
    holder = peewee.CharField(max_length=128)
    expires_at = UtcDateTimeField()
