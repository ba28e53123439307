"""Admission: what one ``op.intake`` message does to the tickets (SPEC §4).

Every message is validated (`messages.parse_intake`), its signature checked,
de-duplicated by its ``message_id`` (and complaints by ``source`` +
``external_ref``), and applied in one transaction with its message id recorded
— or, when anything is wrong (bytes that are not JSON, a wrong shape, an
unknown ticket, an action the ticket's state does not allow, a bad signature,
a value a column refuses), stored whole with every reason in `RejectedMessage`
for ``disputes intake replay``. Either way exactly one row commits, which is
what lets the consumer (`workers.intake`) ack afterwards: nothing is lost,
nothing is half-applied, and no input makes admission raise.

The consumer admits a batch at a time (`admit_batch`, group commit): the
messages it holds go into one transaction, each in a savepoint of its own, so
each still applies or is rejected alone while the batch pays for one commit.

Messages out of order (SPEC §4): a follow-up naming its ticket by ``source`` +
``external_ref`` before that complaint was admitted is held (`HeldMessage`), and
applied, in arrival order, right after the complaint is admitted — in the same
transaction, before any later message. The scheduler releases what a crash left
held after its complaint landed, and rejects what is still unmatched after
``intake.early_message_ttl`` (`release_landed_follow_ups`, `reject_expired_holds`).

This is the models side of the intake: it knows tickets, the ledger and the
policy, and nothing of kombu or of the process it runs in. The caller passes
the `Policy` (transitions, intake secrets) and the dramatiq broker that the
dispatches of an admitted change are sent on after commit.
"""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import dramatiq
import peewee

from messages import SIGNATURE_HEADER, IntakeInvalid, parse_intake, ticket_ref, verify
from messages.events import ledger_body, ledger_routing_key
from models import ledger
from models.base import build, database, utcnow
from models.change import Actor, Role
from models.errors import Refused
from models.intake import HeldMessage, ProcessedMessage, RejectedMessage, storable, storable_headers
from models.machine import NotAllowed
from models.outbox import OutboxEvent
from models.party import SurveyAnswer
from models.prepared import Prepared, Slots, listed, one_of, probe_each
from models.sending import send_dispatches
from models.states import OPEN_STATES
from models.ticket import LinkedComplaint, Ticket
from models.workflow import ClaimCause, Outcome, UnknownTicket, VersionConflict, apply, open_ticket
from models.write_behind import FlushRefused, WriteBehind, claim_later
from policy import Duration, Policy

log = logging.getLogger("disputes.intake")


class MessageRefused(Refused):
    """A well-formed message that cannot be applied (a wrong party, a bad signature, a state that
    takes no survey): stored with its reasons in the rejected store, never retried."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.reasons = {field: [message]}


class EarlyFollowUp(UnknownTicket):
    """A follow-up names a complaint, by its source and reference, that is not admitted (yet)."""

    def __init__(self, identity: tuple[str, str]) -> None:
        super().__init__(f"no ticket is named by {identity!r}")
        self.identity = identity


@dataclass(frozen=True)
class Admission:
    """What became of one message: ``admitted``, ``duplicate``, ``held`` (a follow-up waiting for
    its complaint) or ``rejected``."""

    status: str
    ticket_id: int | None = None
    rejected_id: int | None = None
    reasons: dict[str, list[str]] | None = None
    held_id: int | None = None


#: Messages that name no ticket.
UNTICKETED = ("complaint.submitted", "merchant.balance_changed")

#: routing key -> (action name from the body, the role that takes it)
PARTY_ACTIONS: dict[str, tuple[Callable[[dict], str], Callable[[dict], Role]]] = {
    "evidence.submitted": (lambda d: "submit_evidence", lambda d: Role(d["party"])),
    "merchant.responded": (lambda d: d["option"], lambda d: Role.MERCHANT),
    "merchant.refund_approved": (lambda d: "approve_refund", lambda d: Role.MERCHANT),
    "customer.confirmed": (lambda d: "accept_settlement" if d["accept"] else "decline_settlement",
                           lambda d: Role.USER),
    "customer.withdrew": (lambda d: "withdraw", lambda d: Role.USER),
    "logistics.interception_result": (
        lambda d: "interception_succeeded" if d["success"] else "interception_failed", lambda d: Role.SYSTEM),
    "payment.voucher_uploaded": (lambda d: "upload_voucher", lambda d: Role.MERCHANT),
    "goods.returned": (lambda d: "return_goods", lambda d: Role.USER),
    "appeal.filed": (lambda d: "appeal", lambda d: Role(d["party"])),
}

#: What admission turns into a stored rejection instead of letting it reach the consumer.
_REJECTABLE = (IntakeInvalid, MessageRefused, UnknownTicket, NotAllowed, peewee.DataError)


# -- one message, start to end ---------------------------------------------------------------

class Delivery(NamedTuple):
    """One delivery as admission takes it (`workers.intake_hardening.raw_delivery` plus its headers)."""

    routing_key: str
    body: bytes
    message_id: str | None = None
    headers: dict | None = None


def admit(routing_key: str, body: bytes, message_id: str | None = None, headers: dict | None = None, *,
          policy: Policy, broker: dramatiq.Broker, replaying: RejectedMessage | None = None) -> Admission:
    """Apply one delivery, or store it as rejected; either way one row commits, so the caller may ack.
    The dispatches of an admitted change are sent on `broker` only after it committed."""
    result, dispatches = admit_unsent(routing_key, body, message_id, headers, policy=policy, replaying=replaying)
    dispatches += release_early_follow_ups(routing_key, body, result, policy)
    send_dispatches(broker, dispatches)
    return result


def admit_batch(deliveries: Sequence[Delivery], *, policy: Policy, broker: dramatiq.Broker,
                context: Callable[[Delivery], AbstractContextManager] | None = None,
                committed: Callable[[list[Admission]], None] | None = None) -> list[Admission]:
    """Group commit: admit `deliveries` in delivery order in ONE transaction, each in a savepoint of its
    own, so a message that is rejected rolls back alone and its rejection is stored in the same
    transaction; a message id or a complaint seen earlier in the batch is a duplicate, as across
    batches. Once the transaction committed, `committed` runs (the consumer acks there), then the
    dispatches of every admitted change are sent. When anything else fails (the database is down)
    the whole batch rolls back and the error propagates: nothing of it was stored, so nothing may be
    acked. `context` wraps each message (the consumer's log context).

    New complaints the batch's reads fully answer for are written behind (`models.write_behind`):
    their rows wait in memory and go in with one multi-row ``INSERT`` per table at the end, and a
    rejected one simply drops its rows. Should the database refuse those rows, the batch is rolled
    back and admitted again the careful way, each message in its own savepoint."""
    try:
        admissions, dispatches = _admit_together(deliveries, policy, context, write_behind=True)
    except FlushRefused as refused:
        log.warning("a batch of %s messages is admitted again one by one: %s", len(deliveries), refused)
        admissions, dispatches = _admit_together(deliveries, policy, context, write_behind=False)
    try:
        if committed is not None:
            committed(admissions)
    finally:
        try:
            send_dispatches(broker, dispatches)
        except Exception:  # the rows committed: the relay sends whatever was not sent
            log.warning("dispatches of an admitted batch not sent; the relay will", exc_info=True)
    return admissions


def _admit_together(deliveries: Sequence[Delivery], policy: Policy,
                    context: Callable[[Delivery], AbstractContextManager] | None,
                    write_behind: bool) -> tuple[list[Admission], list]:
    """The batch's transaction: its admissions and the dispatches to send after commit."""
    admissions: list[Admission] = []
    dispatches: list = []
    with database.atomic(), WriteBehind() as batch:
        lookups = BatchLookups(deliveries)
        if write_behind:
            batch.expect(Ticket, lookups.new_tickets_at_most())
        for delivery in deliveries:
            with context(delivery) if context is not None else nullcontext():
                if write_behind and _written_behind(delivery, lookups):
                    result, sends = _admit_behind(delivery, policy, lookups, batch)
                else:
                    batch.flush()  # what this message reads or writes may depend on the rows held so far
                    result, sends = admit_unsent(*delivery, policy=policy, lookups=lookups)
                sends += release_early_follow_ups(delivery.routing_key, delivery.body, result, policy, lookups, batch)
            lookups.seen(delivery.message_id)
            admissions.append(result)
            dispatches += sends
        batch.flush()
    return admissions, dispatches


def _written_behind(delivery: Delivery, lookups: "BatchLookups") -> bool:
    """A complaint whose outcome the batch's reads fully answer: a duplicate (by message id or by
    source and reference), or a new ticket for an order with no open dispute. Nothing else it does
    reads the database, so its rows can wait for the batch's flush."""
    if delivery.routing_key != "complaint.submitted":
        return False
    peeked = lookups.peek(delivery)
    if peeked is None or not lookups.knows_message(storable(delivery.message_id)):
        return False
    identity, dispute = peeked
    known = lookups.known_complaint(identity)
    return known is True or (known is False and lookups.open_dispute(dispute) is None)


def _admit_behind(delivery: Delivery, policy: Policy, lookups: "BatchLookups",
                  batch: WriteBehind) -> tuple[Admission, list]:
    """`admit_unsent` for a complaint written behind: no savepoint (a rejection drops the rows it
    held); a statement the database refuses makes the whole batch go again, one by one."""
    routing_key, body, message_id, headers = delivery
    message_id = storable(message_id)
    mark = batch.mark()
    try:
        with batch.deferred():
            data = lookups.loaded(delivery)
            check_signature(routing_key, data, body, headers or {}, policy.intake_secrets)
            outcome = admit_complaint(data, lookups.claim_later(message_id, routing_key),
                                      message_cause(message_id), policy, lookups)
    except (peewee.IntegrityError, peewee.DataError) as refused:
        raise FlushRefused(str(refused)) from refused
    except _REJECTABLE as problem:
        batch.rollback_to(mark)
        return store_rejected(routing_key, body, message_id, headers, reasons_of(problem)), []
    ticket_id = outcome.ticket.id if outcome.ticket else None
    if outcome.duplicate:
        return Admission("duplicate", ticket_id), []
    return Admission("admitted", ticket_id), list(outcome.dispatches)


def admit_unsent(routing_key: str, body: bytes, message_id: str | None = None, headers: dict | None = None, *,
                 policy: Policy, replaying: RejectedMessage | None = None,
                 lookups: BatchLookups | None = None, hold: bool = True,
                 held_for: Duration | None = None) -> tuple[Admission, list]:
    """`admit` without the sending: the admission and the dispatches to send once it committed.
    Inside a transaction (a batch) the message gets a savepoint of its own, so a rejection — even a
    statement the database refused, which aborts a PostgreSQL transaction — rolls back this message
    alone; on its own, its changes commit as they always did (each ``atomic`` block by itself).
    A follow-up that came before its complaint is held when `hold` (a replay or a release does not
    hold again); `held_for` says, in the reason of a rejected one, how long it was held."""
    message_id = storable(message_id)
    try:
        with database.atomic() if database.in_transaction() else nullcontext():
            data = parse_intake(routing_key, body)
            check_signature(routing_key, data, body, headers or {}, policy.intake_secrets)
            outcome = apply_message(routing_key, data, claim_message(message_id, routing_key),
                                    message_cause(message_id), policy, lookups)
    except _REJECTABLE as problem:
        if isinstance(problem, EarlyFollowUp):
            if hold and replaying is None:
                return hold_follow_up(routing_key, body, message_id, headers, problem.identity, lookups), []
            if held_for is not None:
                return store_rejected(routing_key, body, message_id, headers, {"ticket_id": [
                    f"{problem}: held {held_for} (intake.early_message_ttl) and its complaint never came"]},
                    replaying), []
        return store_rejected(routing_key, body, message_id, headers, reasons_of(problem), replaying), []
    if replaying is not None:
        mark_replayed(replaying)
    ticket_id = outcome.ticket.id if outcome.ticket else None
    if outcome.duplicate:
        return Admission("duplicate", ticket_id), []
    return Admission("admitted", ticket_id), list(outcome.dispatches)


def replay(rejected_id: int, *, policy: Policy, broker: dramatiq.Broker) -> Admission:
    """Re-drive a stored message through the same path (after the cause was fixed); a message a
    replay already applied is a duplicate, so replaying twice applies it once."""
    row = RejectedMessage.get_or_none(id=rejected_id)
    if row is None:
        raise LookupError(f"no rejected message {rejected_id}")
    if row.status == "replayed":
        return Admission("duplicate", rejected_id=row.id)
    return admit(row.routing_key, bytes(row.body), row.message_id, row.headers, policy=policy, broker=broker,
                 replaying=row)


def store_rejected(routing_key: str, body: bytes, message_id: str | None, headers: dict | None,
                   reasons: dict[str, list[str]], replaying: RejectedMessage | None = None) -> Admission:
    """Keep the message whole with its reasons (a replay that failed again only gets fresh reasons),
    every string made `storable` first: a row the database refuses would wedge the consumer."""
    raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogatepass")
    message_id = storable(message_id)
    with database.atomic():
        if replaying is not None:
            RejectedMessage.update(reasons=reasons).where(RejectedMessage.id == replaying.id).execute()
            row_id = replaying.id
        else:
            row_id = RejectedMessage.create(routing_key=storable(str(routing_key))[:255], message_id=message_id,
                                            headers=storable_headers(headers), body=raw, reasons=reasons).id
    log.info("intake rejected %s (%s): %s", routing_key, message_id, reasons)
    return Admission("rejected", rejected_id=row_id, reasons=reasons)


def mark_replayed(row: RejectedMessage) -> None:
    """The stored message has now been applied: ``disputes intake rejected`` stops listing it."""
    with database.atomic():
        RejectedMessage.update(status="replayed", replayed_at=utcnow()).where(RejectedMessage.id == row.id).execute()


def reasons_of(problem: Exception) -> dict[str, list[str]]:
    """The reasons stored with a rejection, keyed by the field at fault (``_state``, ``_database``...)."""
    if isinstance(problem, (IntakeInvalid, MessageRefused)):
        return problem.reasons
    if isinstance(problem, UnknownTicket):
        return {"ticket_id": [str(problem)]}
    if isinstance(problem, NotAllowed):
        return {"_state": [str(problem)]}
    # peewee.DataError: a value the schema let through but a column refuses. Not retryable (requeueing
    # it would wedge the consumer on it forever), so it is stored as rejected.
    text = str(problem).strip()
    reason = text.splitlines()[0][:200] if text else type(problem).__name__
    return {"_database": [f"the database refused a value: {reason}"]}


# -- follow-ups that came before their complaint ------------------------------------------------

def hold_follow_up(routing_key: str, body: bytes, message_id: str | None, headers: dict | None,
                   identity: tuple[str, str], lookups: BatchLookups | None = None) -> Admission:
    """Keep a follow-up whose complaint is not admitted yet; the same message held twice (a
    redelivery) is held once."""
    if message_id and HeldMessage.select().where(HeldMessage.message_id == message_id).exists():
        return Admission("duplicate")
    with database.atomic():
        row = HeldMessage.create(routing_key=routing_key, message_id=message_id, headers=storable_headers(headers),
                                 body=body, source=storable(identity[0], 128), external_ref=storable(identity[1], 128))
    if lookups is not None:
        lookups.held(identity)
    log.info("intake holds %s (%s) until complaint %r is admitted", routing_key, message_id, identity)
    return Admission("held", held_id=row.id)


def release_early_follow_ups(routing_key: str, body: bytes, result: Admission, policy: Policy,
                             lookups: BatchLookups | None = None, batch: WriteBehind | None = None) -> list:
    """A complaint was just admitted (a new ticket or linked to one): apply the follow-ups held for
    it, in arrival order, before anything after it. Returns their dispatches."""
    if routing_key != "complaint.submitted" or result.status != "admitted":
        return []
    if lookups is not None and lookups.holds_nothing():
        return []
    identity = _complaint_identity(body)
    if identity is None or (lookups is not None and lookups.has_held(identity) is False):
        return []
    rows = list(HeldMessage.select().where((HeldMessage.source == identity[0])
                                           & (HeldMessage.external_ref == identity[1])).order_by(HeldMessage.id))
    if rows and batch is not None:
        batch.flush()  # the complaint's rows are in before its follow-ups read them
    return release_held(rows, policy, lookups)


def release_held(rows: Sequence[HeldMessage], policy: Policy, lookups: BatchLookups | None = None,
                 held_for: Duration | None = None) -> list:
    """Apply held follow-ups, each in one transaction with the removal of its hold (a hold another
    process released meanwhile is skipped): it is admitted, or rejected with its reasons — never
    held again. `held_for`: they were released because their time ran out."""
    dispatches: list = []
    for row in rows:
        with database.atomic():
            if HeldMessage.delete().where(HeldMessage.id == row.id).execute() != 1:
                continue
            result, sends = admit_unsent(row.routing_key, bytes(row.body), row.message_id, row.headers,
                                         policy=policy, lookups=lookups, hold=False, held_for=held_for)
        log.info("intake released held %s (%s): %s", row.routing_key, row.message_id, result.status)
        dispatches += sends
    return dispatches


def release_landed_follow_ups(policy: Policy, limit: int = 100) -> tuple[int, list]:
    """The reconciler's part: follow-ups still held though their complaint was admitted (a crash
    between the complaint's commit and their release). Returns how many, and the dispatches."""
    landed = (Ticket.select(Ticket.id).where((Ticket.source == HeldMessage.source)
                                             & (Ticket.external_ref == HeldMessage.external_ref))
              | LinkedComplaint.select(LinkedComplaint.id).where(
                  (LinkedComplaint.source == HeldMessage.source)
                  & (LinkedComplaint.external_ref == HeldMessage.external_ref)))
    rows = list(HeldMessage.select().where(peewee.fn.EXISTS(landed)).order_by(HeldMessage.id).limit(limit))
    return len(rows), release_held(rows, policy) if rows else []


def reject_expired_holds(policy: Policy, now: datetime, limit: int = 100) -> tuple[int, list]:
    """Follow-ups held longer than ``intake.early_message_ttl``: applied if their complaint came
    after all, else rejected as naming an unknown ticket. Returns how many, and the dispatches."""
    ttl = policy.early_message_ttl
    rows = list(HeldMessage.select().where(HeldMessage.received_at <= now - timedelta(seconds=ttl.seconds()))
                .order_by(HeldMessage.id).limit(limit))
    return len(rows), release_held(rows, policy, held_for=ttl) if rows else []


def _complaint_identity(body: bytes) -> tuple[str, str] | None:
    """(source, external_ref) of an admitted complaint's body, as its ticket stores them."""
    try:
        data = json.loads(body)
        return storable(str(data["source"]), 128), storable(str(data["external_ref"]), 128)
    except Exception:  # noqa: BLE001 - admitted, so it parsed; this only reads it again
        return None


# -- what the message does to the tickets ------------------------------------------------------

def apply_message(routing_key: str, data: dict, claim: ClaimCause, cause: str | None, policy: Policy,
                  lookups: BatchLookups | None = None) -> Outcome:
    """Route a validated message to what it does: open or join a ticket, record a balance or a
    survey, or take a party's action on the ticket it names."""
    if routing_key == "complaint.submitted":
        return admit_complaint(data, claim, cause, policy, lookups)
    if lookups is not None:
        lookups.forget()  # a follow-up may close the dispute a later complaint of the batch would join
    if routing_key == "merchant.balance_changed":
        return record_balance(data, claim, cause)
    ticket = named_ticket(data)
    if routing_key == "survey.answered":
        return record_survey(ticket, data, claim)
    return take_party_action(ticket, routing_key, data, claim, cause, policy)


def admit_complaint(data: dict, claim: ClaimCause, cause: str | None, policy: Policy,
                    lookups: BatchLookups | None = None) -> Outcome:
    """A complaint opens a ticket — unless it was admitted before under its source and reference
    (a duplicate), or its order already has an open dispute with the merchant (it joins that one).
    In a batch, `lookups` answers both questions from one read for the whole batch."""
    source, ref = data["source"], data["external_ref"]
    order = data["order"]
    identity, dispute = (source, ref), (order["order_id"], data["merchant_id"])
    known = lookups.known_complaint(identity) if lookups is not None else None
    if known is None:
        known = _KNOWN_COMPLAINT.execute(source=source, ref=ref).fetchone() is not None
    if known:
        claim()  # one statement: atomic by itself, in a batch's savepoint or not
        return Outcome(None, duplicate=True)
    open_id = lookups.open_dispute(dispute) if lookups is not None else UNKNOWN
    if lookups is not None:
        lookups.touch(identity, dispute)  # what this complaint does, later ones of the batch read afresh
    if open_id is UNKNOWN:
        open_one = _OPEN_DISPUTE_OF_ORDER.first(Ticket, order=dispute[0], merchant=dispute[1])
        open_id = open_one.id if open_one is not None else None
    if open_id is not None:
        return link_complaint(Ticket(id=open_id), data, claim, cause, policy)
    fields = dict(source=source, external_ref=ref, channel=data["channel"], user_id=data["user_id"],
                  merchant_id=data["merchant_id"], order_id=order["order_id"], order_amount=order["amount"],
                  currency=order["currency"], category=order["category"], delivery=order["delivery"],
                  order_status=order["status"], dispute_type=data["dispute_type"],
                  claimed_amount=data["claimed_amount"], description=data.get("description") or "",
                  complexity=data.get("complexity") or "simple", contact=data.get("contact"),
                  occurred_at=data["occurred_at"])
    params = {"negotiation": data.get("negotiation") or "pending", "evidence": data.get("evidence"),
              "party": "user"}
    return open_ticket(fields, params, policy, claim_cause=claim, cause=cause)


def link_complaint(ticket: Ticket, data: dict, claim: ClaimCause, cause: str | None, policy: Policy) -> Outcome:
    """A second complaint about an order with an open dispute joins that ticket (one dispute per
    order and merchant), recorded as a `LinkedComplaint` in the transaction of the audited change."""
    def claim_and_link() -> bool:
        if not claim():
            return False
        LinkedComplaint.create(ticket=ticket.id, source=data["source"], external_ref=data["external_ref"],
                               dispute_type=data["dispute_type"], claimed_amount=data["claimed_amount"],
                               description=data.get("description") or "")
        return True
    params = {"linked_source": data["source"], "linked_external_ref": data["external_ref"]}
    return apply(ticket.id, "link_complaint", Actor(Role.SYSTEM), params, policy,
                 claim_cause=claim_and_link, cause=cause)


def take_party_action(ticket: Ticket, routing_key: str, data: dict, claim: ClaimCause, cause: str | None,
                      policy: Policy) -> Outcome:
    """A party's follow-up (evidence, a response, a confirmation...) is the action of `PARTY_ACTIONS`
    on its ticket, taken by the party the ticket names — never by someone else claiming to be it."""
    action_of, role_of = PARTY_ACTIONS[routing_key]
    check_party(ticket, data)
    params = {k: v for k, v in data.items() if k not in ("schema_version", "ticket_id")}
    try:
        return apply(ticket.id, action_of(data), Actor(role_of(data)), params, policy,
                     claim_cause=claim, cause=cause)
    except VersionConflict as conflict:  # retried inside apply; persistent contention
        raise MessageRefused("_state", str(conflict)) from conflict


def record_balance(data: dict, claim: ClaimCause, cause: str | None) -> Outcome:
    """Align the ledger with the payment system's view, and recover advances from it."""
    key = cause or storable(f"{data['merchant_id']}:{data['balance']}:{utcnow().isoformat()}", 120)
    with database.atomic():
        if not claim():
            return Outcome(None, duplicate=True)
        for txn in ledger.sync_merchant_balance(data["merchant_id"], data["balance"], data["currency"], key,
                                                sequence=data.get("sequence"),
                                                applied_through=data.get("applied_through")):
            announce_settlement(txn)
    return Outcome(None)


def record_survey(ticket: Ticket, data: dict, claim: ClaimCause) -> Outcome:
    """The buyer's one satisfaction answer, taken only once the ticket is settled."""
    if ticket.state not in ("closed", "resolved"):
        raise MessageRefused("_state", f"ticket {ticket.id} is '{ticket.state}': a survey follows closing")
    if ticket.user_id != data["user_id"]:
        raise MessageRefused("user_id", "the survey must come from the ticket's buyer")
    with database.atomic():
        if not claim():
            return Outcome(ticket, duplicate=True)
        if SurveyAnswer.select().where(SurveyAnswer.ticket_id == ticket.id).exists():
            raise MessageRefused("ticket_id", f"ticket {ticket.id} already has a survey answer")
        SurveyAnswer.create(ticket_id=ticket.id, user_id=data["user_id"], score=data["score"],
                            comment=data.get("comment"))
    return Outcome(ticket)


def announce_settlement(txn: ledger.LedgerTransaction) -> None:
    """``ledger.debt_settled``: payments moves the amount from the merchant's balance to the platform."""
    ticket = Ticket.get_by_id(txn.ticket_id)
    body = ledger_body(kind=txn.kind, idempotency_key=txn.idempotency_key, ticket_id=ticket.id, source=ticket.source,
                       external_ref=ticket.external_ref, merchant_id=ticket.merchant_id, user_id=ticket.user_id,
                       amount=txn.amount, currency=txn.currency, at=txn.at, sequence=txn.sequence)
    OutboxEvent.create(ticket_id=ticket.id, routing_key=ledger_routing_key(txn.kind), body=body)


# -- checks ----------------------------------------------------------------------------------

def named_ticket(data: dict) -> Ticket:
    """The ticket a follow-up names: by id, or by the source and reference of its complaint or of a
    complaint linked to it (so a party may keep using the reference it knows). A complaint named by
    source and reference that is not admitted may be on its way: `EarlyFollowUp`."""
    kind, ref = ticket_ref(data)
    if kind == "ticket_id":
        ticket = Ticket.get_or_none(id=ref)
    else:
        source, external_ref = ref  # type: ignore[misc]
        ticket = (Ticket.get_or_none((Ticket.source == source) & (Ticket.external_ref == external_ref))
                  or linked_ticket(source, external_ref))
    if ticket is None:
        raise UnknownTicket(f"no ticket is named by {ref!r}") if kind == "ticket_id" else EarlyFollowUp(ref)
    return ticket


def linked_ticket(source: str, external_ref: str) -> Ticket | None:
    """The ticket a complaint under this source and reference was linked to, if any."""
    link = LinkedComplaint.get_or_none((LinkedComplaint.source == source)
                                       & (LinkedComplaint.external_ref == external_ref))
    return Ticket.get_or_none(id=link.ticket_id) if link else None


def check_party(ticket: Ticket, data: dict) -> None:
    """A follow-up that names a merchant or a buyer must name the ticket's own."""
    for key in ("merchant_id", "user_id"):
        if key in data and str(data[key]) != getattr(ticket, key):
            raise MessageRefused(key, f"{key} does not match ticket {ticket.id}'s {key}")


def check_signature(routing_key: str, data: dict, body: bytes, headers: dict, secrets: dict[str, str]) -> None:
    """Every source involved — the one the body names and, for a follow-up, the ticket's own —
    that has a secret must have signed the body; naming another source dodges nothing."""
    def check(source: str | None) -> None:
        secret = secrets.get(source) if source else None
        if secret and not verify(secret, body, headers.get(SIGNATURE_HEADER)):
            raise MessageRefused(SIGNATURE_HEADER, f"missing or invalid signature for source '{source}'")
    check(data.get("source"))  # first: a follow-up held for its complaint was signed by who it names
    if routing_key not in UNTICKETED:
        ticket_source = named_ticket(data).source
        if ticket_source != data.get("source"):
            check(ticket_source)


# -- a batch's reads, once for all its complaints -----------------------------------------------

#: `BatchLookups.open_dispute` has no answer: ask the database.
UNKNOWN = object()


class BatchLookups:
    """Whether the complaints of a batch were admitted before, and which open disputes they would
    join: two reads for the whole batch instead of two per complaint. An answer is given only for
    a key that was read and that no earlier message of the batch may have changed: a complaint
    `touch`es its keys (a later one with the same keys reads afresh, and so sees it), and any other
    message `forget`s everything (a follow-up may close a dispute). Keys come from a lenient peek at
    the bodies; a key that was not read simply has no answer."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        identities, disputes = set(), set()
        self.message_ids = {storable(d.message_id) for d in deliveries if d.message_id}
        self.processed: set[str] | None = None  # message ids admitted before the batch (None: not read)
        self._seen: set[str] = set()  # message ids admitted in this batch so far
        self.peeked_all = True  # every complaint of the batch has keys the read asked about
        self._peeked: dict[int, tuple[tuple[str, str], tuple[str, str]] | None] = {}  # by id(delivery)
        self._loaded: dict[int, dict] = {}  # complaints' validated bodies, by id(delivery)
        for delivery in deliveries:
            peeked = self.peek(delivery) if delivery.routing_key == "complaint.submitted" else None
            if peeked is not None:
                identities.add(peeked[0])
                disputes.add(peeked[1])
            elif delivery.routing_key == "complaint.submitted":
                self.peeked_all = False
        self.identities: set[tuple[str, str]] = set()  # read, and not changed since
        self.known: set[tuple[str, str]] = set()
        self.waiting: set[tuple[str, str]] = set()  # complaints with follow-ups held for them
        self.held_here: set[tuple[str, str]] = set()  # ... held by this batch
        self._read_identities: set[tuple[str, str]] = set()  # asked about, whatever happened since
        self.disputes: set[tuple[str, str]] = set()
        self.open: dict[tuple[str, str], int] = {}
        if len(identities) > 1 or (len(identities) == 1 and len(deliveries) > 1):  # a lone message reads as it always did
            try:
                with database.atomic():  # a savepoint: a read refused leaves the batch's transaction usable
                    self._read(sorted(identities), sorted(disputes))
            except (peewee.DatabaseError, ValueError):  # then every complaint reads for itself
                self.forget()

    def _read(self, identities: list[tuple[str, str]], disputes: list[tuple[str, str]]) -> None:
        # Each pair is asked as "first one of [...] and second one of [...]" — a superset, filtered
        # here — which uses the tables' indexes as a list of row values does not; the lists are bound
        # as one value each, so the statements are prepared once, whatever the batch's size.
        sources, refs = sorted({i[0] for i in identities}), sorted({i[1] for i in identities})
        wanted = set(identities)
        found = [(source, ref, tag) for source, ref, tag in
                 _COMPLAINTS_AND_HOLDS.execute(sources=listed(sources), refs=listed(refs)).fetchall()
                 if (source, ref) in wanted]
        self.known = {(source, ref) for source, ref, tag in found if not tag}
        self.waiting = {(source, ref) for source, ref, tag in found if tag}
        self.identities, self._read_identities = set(wanted), wanted
        rows = _OF_ORDERS.execute(orders=listed(sorted({d[0] for d in disputes}))).fetchall()
        asked = set(disputes)
        self.open = {}
        for ticket_id, order, merchant, state in sorted(rows, reverse=True):  # the lowest id wins
            if state in _OPEN and (order, merchant) in asked:
                self.open[(order, merchant)] = ticket_id
        self.disputes = asked
        ids = sorted(i for i in self.message_ids if i)
        self.processed = {row[0] for row in _PROCESSED.execute(ids=listed(ids)).fetchall()} if ids else set()

    def peek(self, delivery: Delivery) -> tuple[tuple[str, str], tuple[str, str]] | None:
        """The keys of one of the batch's complaints (`_complaint_keys`), its body validated once:
        admission takes the loaded body from here (`loaded`). An invalid body has no keys; admission
        validates it again, and stores why it was refused."""
        key = id(delivery)
        if key not in self._peeked:
            try:
                data = self._loaded[key] = parse_intake(delivery.routing_key, delivery.body)
            except IntakeInvalid:
                self._peeked[key] = None
            else:
                self._peeked[key] = _complaint_keys(data)
        return self._peeked[key]

    def loaded(self, delivery: Delivery) -> dict:
        """The validated body of a complaint this batch peeked at (`parse_intake` when it did not)."""
        data = self._loaded.get(id(delivery))
        return data if data is not None else parse_intake(delivery.routing_key, delivery.body)

    def new_tickets_at_most(self) -> int:
        """How many tickets the batch may open written behind: its complaints that the read found
        neither admitted nor joining an open dispute (fewer when some turn out invalid or repeated)."""
        return sum(1 for keys in self._peeked.values() if keys is not None and keys[0] not in self.known
                   and keys[1] not in self.open)

    def knows_message(self, message_id: str | None) -> bool:
        """Whether this batch can tell, without asking the database, if `message_id` was admitted."""
        return self.processed is not None and message_id is not None

    def seen(self, message_id: str | None) -> None:
        """The batch admitted (or rejected) a message under this id: a later one is a duplicate."""
        if message_id:
            self._seen.add(storable(message_id))

    def claim_later(self, message_id: str, routing_key: str) -> ClaimCause:
        """`claim_message` for a message written behind: answered from the batch's read and the
        messages before it; the id's row is held for the flush, which refuses the batch should
        another consumer have recorded the id meanwhile."""
        def claim() -> bool:
            if message_id in self._seen or (self.processed is not None and message_id in self.processed):
                return False
            self._seen.add(message_id)
            claim_later(build(ProcessedMessage, message_id=message_id, routing_key=routing_key, processed_at=utcnow()))
            return True
        return claim

    def held(self, identity: tuple[str, str]) -> None:
        """A follow-up of this batch is held for the complaint `identity`."""
        self.held_here.add(identity)

    def holds_nothing(self) -> bool:
        """The batch read its complaints' holds and found none, nor held any itself. (A complaint
        whose keys could not be peeked was admitted only if its body was odd: it asks for itself.)"""
        return bool(self._read_identities) and not self.waiting and not self.held_here and self.peeked_all

    def has_held(self, identity: tuple[str, str]) -> bool | None:
        """Whether follow-ups are held for the complaint `identity`; None: not known here. Holds
        only ever begin in the intake, so what the batch read plus what it held is the whole answer."""
        if identity in self.held_here or identity in self.waiting:
            return True
        return False if identity in self._read_identities else None

    def known_complaint(self, identity: tuple[str, str]) -> bool | None:
        """Whether a complaint with this source and reference was admitted; None: not known here."""
        return identity in self.known if identity in self.identities else None

    def open_dispute(self, dispute: tuple[str, str]) -> int | None | object:
        """The open ticket about this order and merchant, None if there is none, or `UNKNOWN`."""
        return self.open.get(dispute) if dispute in self.disputes else UNKNOWN

    def touch(self, identity: tuple[str, str], dispute: tuple[str, str]) -> None:
        self.identities.discard(identity)
        self.disputes.discard(dispute)

    def forget(self) -> None:
        self.identities.clear()
        self.disputes.clear()


def _complaint_keys(data: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """(source, external_ref) and (order id, merchant id) of a validated complaint: text of at most 128
    characters with neither NUL nor a lone surrogate (`messages.fields.Identifier`), so stored as it is."""
    return (data["source"], data["external_ref"]), (data["order"]["order_id"], data["merchant_id"])


# -- de-duplication ------------------------------------------------------------------------------

def claim_message(message_id: str | None, routing_key: str) -> ClaimCause:
    """The claim run first in the effect's transaction: False when this message id was applied
    before, so a redelivery changes nothing."""
    def claim() -> bool:
        if not message_id:
            return True  # nothing to de-duplicate by; complaints still are, by source + external_ref
        # One statement: the row goes in unless the id is already there (then nothing is applied).
        return (ProcessedMessage.insert(message_id=message_id, routing_key=routing_key, processed_at=utcnow())
                .on_conflict_ignore().as_rowcount().execute()) == 1
    return claim


def message_cause(message_id: str | None) -> str | None:
    """The cause recorded with the change (and in ledger idempotency keys); fits their 160 characters."""
    if not message_id:
        return None
    cause = f"message:{message_id}"
    return cause if len(cause) <= 120 else "message:sha256:" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()


def _complaints_and_holds(s: Slots) -> peewee.Query:
    """`BatchLookups`: complaints admitted (as tickets or linked; tagged 0) and follow-ups held for
    complaints (tagged 1) whose source is one of ``s.sources`` and reference one of ``s.refs``."""
    def keyed(model: type[peewee.Model], tag: str) -> peewee.Query:
        return model.select(model.source, model.external_ref, peewee.SQL(tag)).where(
            one_of(model.source, s.sources) & one_of(model.external_ref, s.refs))
    return keyed(Ticket, "0").union_all(keyed(LinkedComplaint, "0")).union_all(keyed(HeldMessage, "1"))


_COMPLAINTS_AND_HOLDS = Prepared(_complaints_and_holds, server_side=False)
#: `BatchLookups`: the tickets (id, order, merchant, state) of the orders ``s.orders``, by the order's
#: index alone (merchant and state are checked in Python: the state's index would find every open ticket).
_OF_ORDERS = Prepared(lambda s: probe_each(
    Ticket.select(Ticket.id, Ticket.order_id, Ticket.merchant_id, Ticket.state), Ticket.order_id, s.orders),
    server_side=False)
#: `BatchLookups`: which of the message ids ``s.ids`` were admitted before.
_PROCESSED = Prepared(lambda s: probe_each(
    ProcessedMessage.select(ProcessedMessage.message_id), ProcessedMessage.message_id, s.ids), server_side=False)
_OPEN = frozenset(str(state) for state in OPEN_STATES)

#: A complaint already admitted (as a ticket or linked to one) under this source and reference.
_KNOWN_COMPLAINT = Prepared(lambda s: Ticket.select(Ticket.id).where(
    (Ticket.source == s.source) & (Ticket.external_ref == s.ref)).union_all(
    LinkedComplaint.select(LinkedComplaint.id).where((LinkedComplaint.source == s.source)
                                                     & (LinkedComplaint.external_ref == s.ref))).limit(1))
#: The open dispute about an order with this merchant, which a further complaint joins.
_OPEN_DISPUTE_OF_ORDER = Prepared(lambda s: Ticket.select(Ticket.id).where(
    (Ticket.order_id == s.order) & (Ticket.merchant_id == s.merchant)
    & Ticket.state.in_([str(state) for state in OPEN_STATES])).limit(1))
