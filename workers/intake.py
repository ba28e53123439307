"""The intake: the kombu consumer of ``op.intake`` (SPEC §4).

Every message is validated (`messages.parse_intake`), de-duplicated by its
``message_id`` (and complaints by ``source`` + ``external_ref``), and applied
in one transaction with its message id recorded — or, when anything is wrong
(bytes that are not JSON, a wrong shape, an unknown ticket, an action the
ticket's state does not allow, a bad signature), stored whole with every
reason in `RejectedMessage` for ``disputes intake replay``. The consumer acks
only after one of those two commits, so nothing is lost and nothing is
half-applied, and no input can stop it.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import peewee
from kombu import Exchange, Queue
from kombu.mixins import ConsumerMixin

from disputes.settings import INTAKE_EXCHANGE, INTAKE_QUEUE
from disputes.logs import intake_context
from disputes.wiring import App
from messages import SIGNATURE_HEADER, IntakeInvalid, parse_intake, ticket_ref, verify
from messages.intake import MAX_BODY_BYTES
from models.base import database, utcnow
from models.change import Actor, Role
from models.intake import ProcessedMessage, RejectedMessage
from models.machine import NotAllowed
from models import ledger
from models.outbox import OutboxEvent
from models.party import SurveyAnswer
from models.prepared import Prepared
from models.states import OPEN_STATES
from models.ticket import LinkedComplaint, Ticket
from models.workflow import ClaimCause, Outcome, UnknownTicket, VersionConflict, apply, open_ticket
from models.sending import send_dispatches

log = logging.getLogger("disputes.intake")

intake_exchange = Exchange(INTAKE_EXCHANGE, type="topic", durable=True)
intake_queue = Queue(INTAKE_QUEUE, exchange=intake_exchange, routing_key="#", durable=True)


def declare_topology(connection: Any) -> None:
    """Declare ``op.intake`` and our durable queue bound to it, so messages published before the
    first consumer starts are kept, not dropped (``disputes init`` calls this)."""
    intake_queue(connection.default_channel).declare()


class Refused(Exception):
    """The message is well-formed but cannot be applied; goes to the rejected store."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.reasons = {field: [message]}


@dataclass(frozen=True)
class Admission:
    """What became of one message: ``admitted``, ``duplicate`` or ``rejected``."""

    status: str
    ticket_id: int | None = None
    rejected_id: int | None = None
    reasons: dict[str, list[str]] | None = None


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


class Intake:
    """Admits one message at a time; the consumer below feeds it from kombu."""

    def __init__(self, app: App) -> None:
        self.app = app

    def admit(self, routing_key: str, body: bytes, message_id: str | None = None,
              headers: dict | None = None, *, replaying: RejectedMessage | None = None) -> Admission:
        message_id = _storable(message_id)
        try:
            data = parse_intake(routing_key, body)
            self._check_signature(routing_key, data, body, headers or {})
            cause = _message_cause(message_id)
            outcome = self._apply(routing_key, data, self._claim(message_id, routing_key), cause)
        except (IntakeInvalid, Refused) as problem:
            return self._reject(routing_key, body, message_id, headers, problem.reasons, replaying)
        except UnknownTicket as problem:
            return self._reject(routing_key, body, message_id, headers, {"ticket_id": [str(problem)]}, replaying)
        except NotAllowed as problem:
            return self._reject(routing_key, body, message_id, headers, {"_state": [str(problem)]}, replaying)
        except peewee.DataError as problem:  # a value the schema let through but a column refuses: not
            # retryable (requeueing it would wedge the consumer on it forever), so it is stored as rejected
            reason = str(problem).strip().splitlines()[0][:200] if str(problem).strip() else type(problem).__name__
            return self._reject(routing_key, body, message_id, headers,
                                {"_database": [f"the database refused a value: {reason}"]}, replaying)
        if replaying is not None:
            with database.atomic():
                RejectedMessage.update(status="replayed", replayed_at=utcnow()).where(
                    RejectedMessage.id == replaying.id).execute()
        if outcome.duplicate:
            return Admission("duplicate", outcome.ticket.id if outcome.ticket else None)
        send_dispatches(self.app.broker, outcome.dispatches)
        return Admission("admitted", outcome.ticket.id if outcome.ticket else None)

    def replay(self, rejected_id: int) -> Admission:
        """Re-drive a stored message through the same path (after the cause was fixed)."""
        row = RejectedMessage.get_or_none(id=rejected_id)
        if row is None:
            raise LookupError(f"no rejected message {rejected_id}")
        if row.status == "replayed":
            return Admission("duplicate", rejected_id=row.id)
        return self.admit(row.routing_key, bytes(row.body), row.message_id, row.headers, replaying=row)

    # -- applying ----------------------------------------------------------------
    def _apply(self, routing_key: str, data: dict, claim: ClaimCause, cause: str | None) -> Outcome:
        if routing_key == "complaint.submitted":
            return self._admit_complaint(data, claim, cause)
        if routing_key == "merchant.balance_changed":
            return self._record_balance(data, claim, cause)
        ticket = self._resolve(data)
        if routing_key == "survey.answered":
            return self._record_survey(ticket, data, claim)
        action_of, role_of = PARTY_ACTIONS[routing_key]
        self._check_party(ticket, data)
        params = {k: v for k, v in data.items() if k not in ("schema_version", "ticket_id")}
        try:
            return apply(ticket.id, action_of(data), Actor(role_of(data)), params, self.app.policy,
                         claim_cause=claim, cause=cause)
        except VersionConflict as conflict:  # retried inside apply; persistent contention
            raise Refused("_state", str(conflict)) from conflict

    def _admit_complaint(self, data: dict, claim: ClaimCause, cause: str | None) -> Outcome:
        source, ref = data["source"], data["external_ref"]
        if _KNOWN_COMPLAINT.execute(source=source, ref=ref).fetchone() is not None:
            with database.atomic():
                claim()
            return Outcome(None, duplicate=True)
        order = data["order"]
        open_one = _OPEN_DISPUTE_OF_ORDER.first(Ticket, order=order["order_id"], merchant=data["merchant_id"])
        if open_one is not None:
            return self._link(open_one, data, claim, cause)
        fields = dict(source=source, external_ref=ref, channel=data["channel"], user_id=data["user_id"],
                      merchant_id=data["merchant_id"], order_id=order["order_id"], order_amount=order["amount"],
                      currency=order["currency"], category=order["category"], delivery=order["delivery"],
                      order_status=order["status"], dispute_type=data["dispute_type"],
                      claimed_amount=data["claimed_amount"], description=data.get("description") or "",
                      complexity=data.get("complexity") or "simple", contact=data.get("contact"),
                      occurred_at=data["occurred_at"])
        params = {"negotiation": data.get("negotiation") or "pending", "evidence": data.get("evidence"),
                  "party": "user"}
        return open_ticket(fields, params, self.app.policy, claim_cause=claim, cause=cause)

    def _link(self, ticket: Ticket, data: dict, claim: ClaimCause, cause: str | None) -> Outcome:
        """A second complaint about an order with an open dispute joins that ticket."""
        def claim_and_link() -> bool:
            if not claim():
                return False
            LinkedComplaint.create(ticket=ticket.id, source=data["source"], external_ref=data["external_ref"],
                                   dispute_type=data["dispute_type"], claimed_amount=data["claimed_amount"],
                                   description=data.get("description") or "")
            return True
        params = {"linked_source": data["source"], "linked_external_ref": data["external_ref"]}
        return apply(ticket.id, "link_complaint", Actor(Role.SYSTEM), params, self.app.policy,
                     claim_cause=claim_and_link, cause=cause)

    def _record_balance(self, data: dict, claim: ClaimCause, cause: str | None) -> Outcome:
        """Align the ledger with the payment system's view, and recover advances from it."""
        key = cause or _storable(f"{data['merchant_id']}:{data['balance']}:{utcnow().isoformat()}", 120)
        with database.atomic():
            if not claim():
                return Outcome(None, duplicate=True)
            for txn in ledger.sync_merchant_balance(data["merchant_id"], data["balance"], data["currency"], key):
                announce_settlement(txn)
        return Outcome(None)

    def _record_survey(self, ticket: Ticket, data: dict, claim: ClaimCause) -> Outcome:
        if ticket.state not in ("closed", "resolved"):
            raise Refused("_state", f"ticket {ticket.id} is '{ticket.state}': a survey follows closing")
        if ticket.user_id != data["user_id"]:
            raise Refused("user_id", "the survey must come from the ticket's buyer")
        with database.atomic():
            if not claim():
                return Outcome(ticket, duplicate=True)
            if SurveyAnswer.select().where(SurveyAnswer.ticket_id == ticket.id).exists():
                raise Refused("ticket_id", f"ticket {ticket.id} already has a survey answer")
            SurveyAnswer.create(ticket_id=ticket.id, user_id=data["user_id"], score=data["score"],
                                comment=data.get("comment"))
        return Outcome(ticket)

    # -- checks ----------------------------------------------------------------
    def _resolve(self, data: dict) -> Ticket:
        kind, ref = ticket_ref(data)
        if kind == "ticket_id":
            ticket = Ticket.get_or_none(id=ref)
        else:
            source, external_ref = ref  # type: ignore[misc]
            ticket = (Ticket.get_or_none((Ticket.source == source) & (Ticket.external_ref == external_ref))
                      or _linked_ticket(source, external_ref))
        if ticket is None:
            raise UnknownTicket(f"no ticket is named by {ref!r}")
        return ticket

    def _check_party(self, ticket: Ticket, data: dict) -> None:
        for key in ("merchant_id", "user_id"):
            if key in data and str(data[key]) != getattr(ticket, key):
                raise Refused(key, f"{key} does not match ticket {ticket.id}'s {key}")

    def _check_signature(self, routing_key: str, data: dict, body: bytes, headers: dict) -> None:
        """Every source involved — the one the body names and, for a follow-up, the ticket's own —
        that has a secret must have signed the body; naming another source dodges nothing."""
        sources = {data.get("source")}
        if routing_key not in UNTICKETED:
            sources.add(self._resolve(data).source)
        for source in sorted(s for s in sources if s):
            secret = self.app.policy.intake_secrets.get(source)
            if secret and not verify(secret, body, headers.get(SIGNATURE_HEADER)):
                raise Refused(SIGNATURE_HEADER, f"missing or invalid signature for source '{source}'")

    def _claim(self, message_id: str | None, routing_key: str) -> ClaimCause:
        def claim() -> bool:
            if not message_id:
                return True  # nothing to de-duplicate by; complaints still are, by source + external_ref
            # One statement: the row goes in unless the id is already there (then nothing is applied).
            return (ProcessedMessage.insert(message_id=message_id, routing_key=routing_key, processed_at=utcnow())
                    .on_conflict_ignore().as_rowcount().execute()) == 1
        return claim

    def _reject(self, routing_key: str, body: bytes, message_id: str | None, headers: dict | None,
                reasons: dict[str, list[str]], replaying: RejectedMessage | None) -> Admission:
        raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogatepass")
        with database.atomic():
            if replaying is not None:
                RejectedMessage.update(reasons=reasons).where(RejectedMessage.id == replaying.id).execute()
                row_id = replaying.id
            else:
                row_id = RejectedMessage.create(routing_key=_storable(str(routing_key))[:255], message_id=message_id,
                                                headers=_jsonable(headers), body=raw, reasons=reasons).id
        log.info("intake rejected %s (%s): %s", routing_key, message_id, reasons)
        return Admission("rejected", rejected_id=row_id, reasons=reasons)


def announce_settlement(txn: ledger.LedgerTransaction) -> None:
    """``ledger.debt_settled``: payments moves the amount from the merchant's balance to the platform."""
    from messages.events import ledger_body, ledger_routing_key
    ticket = Ticket.get_by_id(txn.ticket_id)
    body = ledger_body(kind=txn.kind, idempotency_key=txn.idempotency_key, ticket_id=ticket.id, source=ticket.source,
                       external_ref=ticket.external_ref, merchant_id=ticket.merchant_id, user_id=ticket.user_id,
                       amount=txn.amount, currency=txn.currency, at=txn.at)
    OutboxEvent.create(ticket_id=ticket.id, routing_key=ledger_routing_key(txn.kind), body=body)


def _linked_ticket(source: str, external_ref: str) -> Ticket | None:
    link = LinkedComplaint.get_or_none((LinkedComplaint.source == source)
                                       & (LinkedComplaint.external_ref == external_ref))
    return Ticket.get_or_none(id=link.ticket_id) if link else None


#: A complaint already admitted (as a ticket or linked to one) under this source and reference.
_KNOWN_COMPLAINT = Prepared(lambda s: Ticket.select(Ticket.id).where(
    (Ticket.source == s.source) & (Ticket.external_ref == s.ref)).union_all(
    LinkedComplaint.select(LinkedComplaint.id).where((LinkedComplaint.source == s.source)
                                                     & (LinkedComplaint.external_ref == s.ref))).limit(1))
#: The open dispute about an order with this merchant, which a further complaint joins.
_OPEN_DISPUTE_OF_ORDER = Prepared(lambda s: Ticket.select(Ticket.id).where(
    (Ticket.order_id == s.order) & (Ticket.merchant_id == s.merchant)
    & Ticket.state.in_([str(state) for state in OPEN_STATES])).limit(1))


def _jsonable(headers: dict | None) -> dict | None:
    if not headers:
        return None
    return {_storable(str(k), None): v if isinstance(v, (int, float, bool, type(None)))
            else _storable(v if isinstance(v, str) else repr(v), None) for k, v in headers.items()}


def _storable(text: Any, limit: int | None = 255) -> Any:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates (an AMQP short string may carry
    both) escaped, and past ``limit`` characters (a column's width) replaced by its digest; the same
    input gives the same output, so a redelivery is still recognised."""
    if not isinstance(text, str):
        return None if text is None else _storable(str(text), limit)
    if "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text):
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    if limit is None or len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _message_cause(message_id: str | None) -> str | None:
    """The cause recorded with the change (and in ledger idempotency keys); fits their 160 characters."""
    if not message_id:
        return None
    cause = f"message:{message_id}"
    return cause if len(cause) <= 120 else "message:sha256:" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()


def bound_decompression(limit: int = MAX_BODY_BYTES) -> None:
    """kombu inflates a body whose ``compression`` header names a codec before any of our code sees it,
    so a few kilobytes of gzip could become gigabytes in the consumer's memory. Swap kombu's decoders
    for ones that stop past `limit` bytes (the largest body the intake accepts) and refuse codecs we
    cannot bound; the message then fails to decode and goes to the rejected store (`on_decode_error`)."""
    import bz2
    import lzma
    import zlib

    from kombu import compression

    bounded = {"application/x-gzip": zlib.decompressobj, "application/x-bz2": bz2.BZ2Decompressor,
               "application/x-lzma": lzma.LZMADecompressor}
    for content_type in compression.encoders():
        encoder = compression.get_encoder(content_type)[0]
        make = bounded.get(content_type)
        compression.register(encoder, _bounded_decoder(make, limit) if make else _refuse(content_type), content_type)


def _bounded_decoder(make: Callable[[], Any], limit: int) -> Callable[[bytes], bytes]:
    def decode(body: bytes) -> bytes:
        inflater = make()
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit:
            raise ValueError(f"the body inflates past {limit} bytes")
        if not inflater.eof:
            raise ValueError("the compressed body is truncated")
        return out
    return decode


def _refuse(content_type: str) -> Callable[[bytes], bytes]:
    def decode(body: bytes) -> bytes:
        raise ValueError(f"compression {content_type} is not accepted")
    return decode


class IntakeConsumer(ConsumerMixin):
    """Feeds `Intake` from ``op.intake``; acks only after the message's row committed."""

    def __init__(self, app: App, connection: Any, *, prefetch: int = 64, queue: Queue = intake_queue) -> None:
        bound_decompression()
        self.intake = Intake(app)
        self.connection = connection
        self.prefetch = prefetch
        self.queue = queue

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """kombu could not even build the message (a bad ``compression`` header): kombu's default acks
        and drops it; we store it as rejected with its raw bytes, then ack (requeue if the store fails)."""
        routing_key, body, message_id = _raw(message)
        headers = dict(message.headers or {})
        reasons = {"_message": [f"message cannot be decoded ({type(exc).__name__}): "
                                f"headers say compression {str(headers.get('compression'))[:64]!r}"]}
        self._store_then_ack(message, lambda: self.intake._reject(routing_key, body, _storable(message_id), headers,
                                                                  reasons, None))

    def get_consumers(self, Consumer: Any, channel: Any) -> list:
        # on_message: kombu hands us the raw message undecoded, so no body can make it raise.
        return [Consumer(queues=[self.queue], on_message=self.on_message, prefetch_count=self.prefetch)]

    def on_message(self, message: Any) -> None:
        routing_key, body, message_id = _raw(message)

        def admit() -> None:
            with intake_context(routing_key, body, message_id):
                self.intake.admit(routing_key, body, message_id, dict(message.headers or {}))
        self._store_then_ack(message, admit)

    @staticmethod
    def _store_then_ack(message: Any, store: Callable[[], object]) -> None:
        """Ack only once `store` committed; when it fails (the database is down) keep the message
        and try again shortly. The consumer is one thread: it keeps its connection between messages
        (a reconnect per message cost a fifth of the admission time) and drops it only on failure."""
        try:
            database.connect(reuse_if_open=True)
            store()
        except Exception:
            log.exception("intake could not store message %s; requeueing", (message.properties or {}).get("message_id"))
            if not database.is_closed() and not database.in_transaction():
                database.close()
            message.requeue()
            time.sleep(1.0)
            return
        message.ack()


def _raw(message: Any) -> tuple[str, bytes, str | None]:
    """Routing key, body bytes and message id of a delivery, whatever kombu made of it."""
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8", "surrogatepass")
    return (message.delivery_info or {}).get("routing_key") or "", body, (message.properties or {}).get("message_id")


def consume(app: App, *, should_stop: Callable[[], bool] | None = None, queue: Queue = intake_queue) -> None:
    """Run the intake consumer until interrupted (``disputes intake``; the benchmark names its own queue)."""
    with app.kombu_connection() as connection:
        consumer = IntakeConsumer(app, connection, queue=queue)
        if should_stop is not None:
            consumer.should_stop = False
            import threading

            def watch() -> None:
                while not should_stop():
                    time.sleep(0.2)
                consumer.should_stop = True
            threading.Thread(target=watch, daemon=True, name="intake-stop").start()
        consumer.run()
