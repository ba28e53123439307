"""The intake (SPEC §4): de-duplication, linking, the rejected store and replay, signatures, balances."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from policy import Policy
from messages import SIGNATURE_HEADER, sign
from messages.events import check_event_body
from models.audit import TicketEvent
from models.intake import ProcessedMessage, RejectedMessage
from models.outbox import Dispatch, OutboxEvent
from models import admission, ledger
from tests.conftest import fund_merchant
from models.party import SurveyAnswer
from models.ticket import LinkedComplaint, Ticket


def evidence(**overrides) -> dict:
    body = {"schema_version": 1, "party": "merchant",
            "items": [{"kind": "photo", "uri": "https://files.example/e1.jpg"}]}
    body.update(overrides)
    return body


def audit_actions(ticket_id: int) -> list[str]:
    return [e.action for e in TicketEvent.select().where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.version)]


# -- de-duplication -----------------------------------------------------------

def test_the_same_complaint_sent_twice_with_one_message_id_makes_one_ticket(app, publish, complaint) -> None:
    # Given a complaint
    body = complaint()
    # When it is delivered twice with the same message id
    first = publish("complaint.submitted", body, "msg-1")
    second = publish("complaint.submitted", body, "msg-1")
    # Then one ticket exists, in negotiation, and the repeat is acknowledged as a duplicate
    assert (first.status, second.status) == ("admitted", "duplicate")
    assert Ticket.select().count() == 1
    assert Ticket.get_by_id(first.ticket_id).state == "negotiating"
    assert audit_actions(first.ticket_id) == ["submit"]
    assert RejectedMessage.select().count() == 0
    # And the audit row names the message that caused it
    assert TicketEvent.get(TicketEvent.ticket == first.ticket_id).cause == "message:msg-1"


def test_a_complaint_resent_under_a_new_message_id_makes_no_second_ticket(app, publish, complaint) -> None:
    # Given a complaint admitted once
    body = complaint()
    first = publish("complaint.submitted", body, "msg-1")
    # When upstream resends it (same source + external_ref) under another message id
    second = publish("complaint.submitted", body, "msg-2")
    # Then there is still one ticket with one creation event
    assert (first.status, second.status) == ("admitted", "duplicate")
    assert Ticket.select().count() == 1
    assert [e.routing_key for e in OutboxEvent.select()] == ["ticket.negotiating"]
    assert {m.message_id for m in ProcessedMessage.select()} == {"msg-1", "msg-2"}


def test_a_follow_up_redelivered_under_its_message_id_applies_once(app, publish, complaint) -> None:
    # Given a ticket in negotiation
    ticket_id = publish("complaint.submitted", complaint(external_ref="R1"), "c-1").ticket_id
    # When the merchant's evidence arrives twice under one message id
    first = publish("evidence.submitted", evidence(source="shop", external_ref="R1"), "e-1")
    second = publish("evidence.submitted", evidence(source="shop", external_ref="R1"), "e-1")
    # Then it is recorded once
    assert (first.status, second.status) == ("admitted", "duplicate")
    assert audit_actions(ticket_id) == ["submit", "submit_evidence"]
    assert Ticket.get_by_id(ticket_id).version == 2


# -- linking -------------------------------------------------------------------

def test_a_second_complaint_about_the_same_order_and_merchant_joins_the_open_ticket(
        app, publish, complaint) -> None:
    # Given an open ticket about order O-7 of merchant m1
    ticket_id = publish("complaint.submitted", complaint(external_ref="A", order={"order_id": "O-7"}), "c-1").ticket_id
    # When another complaint about the same order and merchant arrives with its own reference
    linked = publish("complaint.submitted",
                     complaint(source="callcenter", external_ref="B", channel="phone", order={"order_id": "O-7"},
                               dispute_type="not_as_described"), "c-2")
    # Then no second ticket: the complaint is linked to the first one, audited and announced
    assert (linked.status, linked.ticket_id) == ("admitted", ticket_id)
    assert Ticket.select().count() == 1
    link = LinkedComplaint.get()
    assert (link.ticket_id, link.source, link.external_ref, link.dispute_type) == (
        ticket_id, "callcenter", "B", "not_as_described")
    assert audit_actions(ticket_id) == ["submit", "link_complaint"]
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.version) == ("negotiating", 2)
    announced = OutboxEvent.select().order_by(OutboxEvent.id)[-1]
    assert announced.routing_key == "ticket.negotiating"
    assert (announced.body["action"], announced.body["from_state"], announced.body["to_state"]) == (
        "link_complaint", "negotiating", "negotiating")


def test_a_follow_up_naming_a_linked_complaint_reaches_its_ticket(app, publish, complaint) -> None:
    # Given complaint B linked to the ticket of complaint A
    ticket_id = publish("complaint.submitted", complaint(external_ref="A", order={"order_id": "O-8"})).ticket_id
    publish("complaint.submitted", complaint(external_ref="B", order={"order_id": "O-8"}))
    # When evidence names complaint B
    admission = publish("evidence.submitted", evidence(source="shop", external_ref="B"))
    # Then it lands on the ticket
    assert (admission.status, admission.ticket_id) == ("admitted", ticket_id)
    assert audit_actions(ticket_id)[-1] == "submit_evidence"


def test_the_same_order_at_another_merchant_opens_its_own_ticket(app, publish, complaint) -> None:
    first = publish("complaint.submitted", complaint(order={"order_id": "O-9"}, merchant_id="m1"))
    second = publish("complaint.submitted", complaint(order={"order_id": "O-9"}, merchant_id="m2"))
    assert first.ticket_id != second.ticket_id
    assert LinkedComplaint.select().count() == 0


# -- the rejected store ----------------------------------------------------------

@pytest.mark.parametrize("raw", [b"not json{", b"\xff\xfe\x00", b"[1, 2]", b"", b"null"])
def test_bytes_that_are_not_a_json_object_are_stored_with_the_reason(app, publish, raw: bytes) -> None:
    # When bytes that are no JSON object arrive
    admission = publish("complaint.submitted", raw, "bad-1")
    # Then they are kept whole, with a reason, and nothing else happens
    assert admission.status == "rejected"
    row = RejectedMessage.get_by_id(admission.rejected_id)
    assert (bytes(row.body), row.routing_key, row.message_id, row.status) == (
        raw, "complaint.submitted", "bad-1", "rejected")
    assert row.reasons["_message"]
    assert Ticket.select().count() == 0 and ProcessedMessage.select().count() == 0


def test_a_complaint_of_the_wrong_shape_is_stored_with_every_reason(app, publish, complaint) -> None:
    # Given a complaint claiming more than the order, with a float amount and no channel
    body = complaint(claimed_amount=20000, order={"amount": 100.5})
    del body["channel"]
    # When it arrives
    admission = publish("complaint.submitted", body, "bad-2")
    # Then it is stored with one reason per problem
    assert admission.status == "rejected"
    reasons = RejectedMessage.get_by_id(admission.rejected_id).reasons
    assert {"channel", "order.amount"} <= set(reasons)
    assert reasons == admission.reasons
    assert Ticket.select().count() == 0


def test_a_message_about_an_unknown_ticket_is_stored_as_rejected(app, publish) -> None:
    admission = publish("evidence.submitted", evidence(ticket_id=999), "e-9")
    assert admission.status == "rejected"
    assert "ticket_id" in RejectedMessage.get_by_id(admission.rejected_id).reasons
    assert ProcessedMessage.select().count() == 0


def test_an_action_the_ticket_state_does_not_allow_is_stored_and_changes_nothing(
        app, publish, complaint) -> None:
    # Given a ticket still in negotiation
    ticket_id = publish("complaint.submitted", complaint(), "c-1").ticket_id
    # When the buyer "confirms" a settlement nobody offered
    admission = publish("customer.confirmed", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u1",
                                               "accept": True}, "cc-1")
    # Then the message is rejected with the state as its reason, and the ticket is as it was
    assert admission.status == "rejected"
    reasons = RejectedMessage.get_by_id(admission.rejected_id).reasons
    assert "accept_settlement" in reasons["_state"][0] and "negotiating" in reasons["_state"][0]
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.version) == ("negotiating", 1)
    assert not ProcessedMessage.select().where(ProcessedMessage.message_id == "cc-1").exists()


def test_a_message_from_another_buyer_is_stored_as_rejected(app, publish, complaint) -> None:
    ticket_id = publish("complaint.submitted", complaint(user_id="u1")).ticket_id
    admission = publish("customer.withdrew", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "intruder"})
    assert admission.status == "rejected" and "user_id" in admission.reasons
    assert Ticket.get_by_id(ticket_id).state == "negotiating"


def test_replay_applies_a_message_once_its_cause_is_fixed(app, publish, complaint, intake) -> None:
    # Given evidence held for its complaint past intake.early_message_ttl, and so rejected for
    # naming no known ticket
    early = publish("evidence.submitted", evidence(source="shop", external_ref="EARLY"), "e-early")
    assert early.status == "held"
    assert admission.reject_expired_holds(app.policy, app.clock() + timedelta(hours=1))[0] == 1
    early = RejectedMessage.get(RejectedMessage.message_id == "e-early")
    early.rejected_id = early.id
    # When the complaint arrives and the operator replays the stored message
    ticket_id = publish("complaint.submitted", complaint(external_ref="EARLY"), "c-early").ticket_id
    replayed = intake.replay(early.rejected_id)
    # Then the evidence is applied to the ticket and the stored message is marked replayed
    assert (replayed.status, replayed.ticket_id) == ("admitted", ticket_id)
    row = RejectedMessage.get_by_id(early.rejected_id)
    assert row.status == "replayed" and row.replayed_at is not None
    assert audit_actions(ticket_id) == ["submit", "submit_evidence"]
    # And replaying it again changes nothing
    assert intake.replay(early.rejected_id).status == "duplicate"
    assert audit_actions(ticket_id) == ["submit", "submit_evidence"]


def test_replay_of_a_message_still_broken_keeps_it_rejected_with_fresh_reasons(app, publish, intake) -> None:
    early = publish("evidence.submitted", evidence(ticket_id=999_999))
    again = intake.replay(early.rejected_id)
    assert (again.status, again.rejected_id) == ("rejected", early.rejected_id)
    assert RejectedMessage.select().count() == 1
    assert RejectedMessage.get_by_id(early.rejected_id).status == "rejected"


def test_replay_of_an_unknown_rejected_id_says_so(app, intake) -> None:
    with pytest.raises(LookupError):
        intake.replay(12345)


# -- signatures ------------------------------------------------------------------

class TestSignedSource:
    """With ``[intake.secrets] shop = "s3cret"``, messages from ``shop`` must be signed."""

    @pytest.fixture
    def policy(self, make_policy) -> Policy:
        return make_policy(intake={"secrets": {"shop": "s3cret"}})

    def test_an_unsigned_complaint_is_rejected(self, app, publish, complaint) -> None:
        admission = publish("complaint.submitted", complaint(), "s-1")
        assert admission.status == "rejected" and SIGNATURE_HEADER in admission.reasons
        assert Ticket.select().count() == 0

    def test_a_complaint_signed_with_the_wrong_secret_is_rejected(self, app, publish, complaint) -> None:
        raw = json.dumps(complaint()).encode()
        admission = publish("complaint.submitted", raw, "s-2", {SIGNATURE_HEADER: sign("guess", raw)})
        assert admission.status == "rejected" and SIGNATURE_HEADER in admission.reasons
        assert RejectedMessage.get_by_id(admission.rejected_id).headers == {SIGNATURE_HEADER: sign("guess", raw)}

    def test_a_complaint_signed_with_the_source_secret_is_admitted(self, app, publish, complaint) -> None:
        raw = json.dumps(complaint()).encode()
        admission = publish("complaint.submitted", raw, "s-3", {SIGNATURE_HEADER: sign("s3cret", raw)})
        assert admission.status == "admitted"
        assert Ticket.get_by_id(admission.ticket_id).state == "negotiating"

    def test_a_follow_up_by_ticket_id_must_be_signed_with_its_ticket_source_secret(
            self, app, publish, complaint) -> None:
        raw = json.dumps(complaint()).encode()
        ticket_id = publish("complaint.submitted", raw, None, {SIGNATURE_HEADER: sign("s3cret", raw)}).ticket_id
        follow = json.dumps(evidence(ticket_id=ticket_id)).encode()
        assert publish("evidence.submitted", follow).status == "rejected"
        assert publish("evidence.submitted", follow, None, {SIGNATURE_HEADER: sign("s3cret", follow)}).status == "admitted"

    def test_a_follow_up_cannot_dodge_the_signature_by_naming_another_source(self, app, publish, complaint) -> None:
        # Given a ticket from the signed source "shop"
        raw = json.dumps(complaint(negotiation="failed")).encode()
        ticket_id = publish("complaint.submitted", raw, None, {SIGNATURE_HEADER: sign("s3cret", raw)}).ticket_id
        # When an unsigned withdrawal names the ticket by id and claims another source
        forged = {"schema_version": 1, "ticket_id": ticket_id, "source": "unsigned", "user_id": "u1"}
        admission = publish("customer.withdrew", forged)
        # Then it is rejected and the ticket stays open
        assert admission.status == "rejected"
        assert Ticket.get_by_id(ticket_id).state == "awaiting_takeover"

    def test_a_source_without_a_secret_needs_no_signature(self, app, publish, complaint) -> None:
        assert publish("complaint.submitted", complaint(source="other")).status == "admitted"


# -- balances ----------------------------------------------------------------------

def test_a_merchant_balance_change_is_recorded_and_then_updated(app, publish) -> None:
    # When the payment system reports a balance, and later another
    first = publish("merchant.balance_changed",
                    {"schema_version": 1, "merchant_id": "m1", "balance": 12000, "currency": "CNY"}, "b-1")
    second = publish("merchant.balance_changed",
                     {"schema_version": 1, "merchant_id": "m1", "balance": 300, "currency": "CNY"}, "b-2")
    # Then the merchant's account holds the latest
    assert (first.status, second.status) == ("admitted", "admitted")
    assert ledger.merchant_funds("m1", "CNY") == 300
    # And a redelivery of the older report does not roll it back
    assert publish("merchant.balance_changed",
                   {"schema_version": 1, "merchant_id": "m1", "balance": 12000, "currency": "CNY"}, "b-1"
                   ).status == "duplicate"
    assert ledger.merchant_funds("m1", "CNY") == 300
    assert ledger.check_invariants() == []


def report(merchant: str, balance: int, **numbers: int) -> dict:
    return {"schema_version": 1, "merchant_id": merchant, "balance": balance, "currency": "CNY", **numbers}


def deduct(merchant: str, amount: int, key: str) -> int:
    """A refund we deducted and announced to payments; returns its sequence."""
    txn = ledger.post(key, "refund_deducted", "CNY", [(f"merchant:{merchant}", -amount), ("buyer:u1", amount)],
                      ticket_id=1, announced_to=merchant)
    return txn.sequence


def test_a_balance_report_older_than_one_applied_is_recorded_and_not_applied(app, publish) -> None:
    # Given payments' report number 7 applied
    publish("merchant.balance_changed", report("m1", 9000, sequence=7), "b-7")
    # When its report number 5, taken earlier, arrives late
    late = publish("merchant.balance_changed", report("m1", 12000, sequence=5), "b-5")
    # Then it is admitted and recorded, and our view keeps report 7's balance
    assert late.status == "admitted"
    assert ledger.merchant_funds("m1", "CNY") == 9000
    stored = {r.sequence: r.funds for r in ledger.BalanceReport.select().where(ledger.BalanceReport.merchant_id == "m1")}
    assert stored == {7: 9000, 5: None}
    # And the same report number again (under another message id) changes nothing either
    publish("merchant.balance_changed", report("m1", 12000, sequence=7), "b-7-again")
    assert ledger.merchant_funds("m1", "CNY") == 9000
    assert ledger.check_invariants() == []


def test_a_snapshot_taken_before_our_deduction_reached_payments_does_not_count_it_twice(app, publish) -> None:
    # Given 10,000 available, and then a refund of 3,000 we deducted (announced as sequence 1)
    publish("merchant.balance_changed", report("m1", 10_000, sequence=1, applied_through=0), "b-1")
    assert deduct("m1", 3000, "refund:1") == 1
    assert ledger.merchant_funds("m1", "CNY") == 7000
    # When payments reports 10,000 again from a snapshot taken before it applied our deduction
    publish("merchant.balance_changed", report("m1", 10_000, sequence=2, applied_through=0), "b-2")
    # Then the deduction still counts: 7,000, not 10,000
    assert ledger.merchant_funds("m1", "CNY") == 7000
    # And once payments applied it (applied_through 1) and the merchant sold for 500 more
    publish("merchant.balance_changed", report("m1", 7500, sequence=3, applied_through=1), "b-3")
    assert ledger.merchant_funds("m1", "CNY") == 7500
    assert ledger.check_invariants() == []


def test_a_balance_report_without_the_new_fields_is_the_view_as_before(app, publish) -> None:
    publish("merchant.balance_changed", report("m1", 10_000), "b-1")
    deduct("m1", 3000, "refund:1")
    publish("merchant.balance_changed", report("m1", 10_000), "b-2")
    assert ledger.merchant_funds("m1", "CNY") == 10_000  # documented: without applied_through it is taken as is


def test_a_balance_report_under_a_long_message_id_settles_a_debt_with_a_key_that_keeps_the_contract(
        app, publish, complaint) -> None:
    # Given a merchant owing the platform 500 for a ticket (an advance)
    ticket_id = publish("complaint.submitted", complaint(), "c-debt").ticket_id
    ledger.post("debt:advance", "debt_recorded", "CNY", [("debt:m1", -500), ("platform", 500)], ticket_id=ticket_id)
    # When payments reports funds under a message id of 112 characters (a key of 120 with its prefix)
    result = publish("merchant.balance_changed", report("m1", 2000), "b" * 112)
    # Then the debt is settled and announced with a key payments can store (at most 128 characters)
    assert result.status == "admitted", result.reasons
    settled = OutboxEvent.get(OutboxEvent.routing_key == "ledger.debt_settled")
    assert len(settled.body["idempotency_key"]) <= 128 and settled.body["amount"] == 500
    assert check_event_body(settled.routing_key, settled.body) == {}
    assert ledger.merchant_debt("m1", "CNY") == 0


def test_a_balance_report_with_a_bad_sequence_is_rejected_naming_the_field(app, publish) -> None:
    result = publish("merchant.balance_changed", report("m1", 100, sequence=-1, applied_through=True), "b-x")
    assert result.status == "rejected" and {"sequence", "applied_through"} <= set(result.reasons)


def test_a_complaint_that_skipped_negotiation_is_handed_to_stage_one(app, publish, complaint) -> None:
    # When a complaint whose negotiation failed arrives
    admission = publish("complaint.submitted", complaint(negotiation="failed"))
    # Then the ticket waits for takeover, where stage-1 agents claim it (pull routing: no message)
    assert Ticket.get_by_id(admission.ticket_id).state == "awaiting_takeover"
    assert not Dispatch.select().where(Dispatch.ticket_id == admission.ticket_id).exists()
    assert app.broker.queues["stage1"].qsize() == 0


class TestUnderPushRouting:
    @pytest.fixture
    def policy(self, make_policy):
        return make_policy(routing={"mode": "push"})

    def test_a_complaint_that_skipped_negotiation_is_sent_to_the_stage_one_router(
            self, app, publish, complaint) -> None:
        admission = publish("complaint.submitted", complaint(negotiation="failed"))
        assert Ticket.get_by_id(admission.ticket_id).state == "awaiting_takeover"
        arrival = Dispatch.get(Dispatch.ticket_id == admission.ticket_id)
        assert (arrival.queue, arrival.kind, arrival.sent_at is not None) == ("stage1", "arrive", True)
        assert app.broker.queues["stage1"].qsize() == 1


def test_a_linked_complaint_resent_under_a_new_message_id_is_a_duplicate(app, publish, complaint) -> None:
    ticket_id = publish("complaint.submitted", complaint(external_ref="A", order={"order_id": "O-5"}), "c-1").ticket_id
    body = complaint(external_ref="B", order={"order_id": "O-5"})
    assert publish("complaint.submitted", body, "c-2").ticket_id == ticket_id
    assert publish("complaint.submitted", body, "c-3").status == "duplicate"
    assert LinkedComplaint.select().count() == 1
    assert audit_actions(ticket_id) == ["submit", "link_complaint"]


def test_a_survey_is_taken_once_and_only_after_the_ticket_is_settled(app, publish, complaint) -> None:
    # Given a ticket still in negotiation
    ticket_id = publish("complaint.submitted", complaint(user_id="u1")).ticket_id
    survey = {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u1", "score": 5}
    # Then a survey is refused while it is open
    assert publish("survey.answered", survey).status == "rejected"
    # When the buyer accepts the merchant's direct refund, the survey is recorded, once
    fund_merchant("m1")
    publish("merchant.responded", {"schema_version": 1, "ticket_id": ticket_id, "merchant_id": "m1",
                                   "option": "direct_refund"})
    publish("customer.confirmed", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u1", "accept": True})
    assert Ticket.get_by_id(ticket_id).state == "resolved"
    assert publish("survey.answered", survey, "sv-1").status == "admitted"
    assert publish("survey.answered", dict(survey, score=1), "sv-2").status == "rejected"
    assert SurveyAnswer.get(SurveyAnswer.ticket_id == ticket_id).score == 5


# -- hostile transport properties (found by tests/integration/test_hostile_intake.py) ----------

def test_a_message_id_with_a_lone_surrogate_or_nul_is_stored_escaped_and_still_deduplicated(
        app, publish, complaint) -> None:
    # Given message ids an AMQP short string can carry but a database column cannot
    body = complaint()
    # When a complaint arrives twice under such an id, and a broken body under another
    first = publish("complaint.submitted", body, "id-\ud800")
    second = publish("complaint.submitted", complaint(), "id-\ud800")
    broken = publish("complaint.submitted", b"{oops", "bad-\x00-\udfff", {"x-\x00": "v\ud800"})
    # Then the first is admitted, the repeat ignored, and the broken one stored, nothing raised
    assert (first.status, second.status, broken.status) == ("admitted", "duplicate", "rejected")
    assert Ticket.select().count() == 1
    row = RejectedMessage.get_by_id(broken.rejected_id)
    assert row.message_id == "bad-\\x00-\\xed\\xbf\\xbf" and row.headers == {"x-\\x00": "v\\xed\\xa0\\x80"}


def test_a_255_character_message_id_is_admitted_and_its_cause_fits_the_audit_column(app, publish, complaint) -> None:
    admission = publish("complaint.submitted", complaint(), "m" * 255)
    assert admission.status == "admitted"
    cause = TicketEvent.get(TicketEvent.ticket == admission.ticket_id).cause
    assert cause.startswith("message:") and len(cause) <= TicketEvent.cause.max_length
    assert publish("complaint.submitted", complaint(), "m" * 255).status == "duplicate"


def test_a_category_longer_than_its_column_is_rejected_naming_order_category(app, publish, complaint) -> None:
    admission = publish("complaint.submitted", complaint(order={"category": "c" * 65}), "long-category")
    assert admission.status == "rejected" and "order.category" in admission.reasons
    assert Ticket.select().count() == 0


def test_a_value_the_database_refuses_is_stored_as_rejected_not_retried_forever(
        app, publish, complaint, monkeypatch) -> None:
    import peewee

    import models.admission

    def refuse(*args, **kwargs):
        raise peewee.DataError("value too long for type character varying(64)")
    monkeypatch.setattr(models.admission, "open_ticket", refuse)
    admission = publish("complaint.submitted", complaint(), "refused-1")
    assert admission.status == "rejected"
    assert admission.reasons == {"_database": ["the database refused a value: value too long for type character "
                                               "varying(64)"]}
    assert Ticket.select().count() == 0 and ProcessedMessage.select().count() == 0


def test_a_message_kombu_cannot_decode_goes_to_the_rejected_store_not_the_floor(app) -> None:
    from kombu.message import Message

    from workers.intake import IntakeConsumer

    class Delivered(Message):
        acked = requeued = False

        def ack(self, multiple: bool = False) -> None:
            self.acked = True

        def requeue(self) -> None:
            self.requeued = True

    # Given a message whose headers name a compression its body does not have
    message = Delivered(body=b'{"schema_version": 1}', headers={"compression": "application/x-gzip"},
                        delivery_info={"routing_key": "complaint.submitted"}, properties={"message_id": "z-1"})
    assert message.errors  # kombu could not build it: it never reaches on_message
    # When kombu reports the decode error to the consumer
    IntakeConsumer(app, connection=None).on_decode_error(message, message.errors[0][1])
    # Then it is stored whole, with a reason, and acknowledged
    row = RejectedMessage.get(RejectedMessage.message_id == "z-1")
    assert bytes(row.body) == b'{"schema_version": 1}' and "compression" in row.reasons["_message"][0]
    assert message.acked and not message.requeued


def test_a_balance_without_a_message_id_from_the_longest_merchant_id_fits_the_ledger_key(app, publish) -> None:
    from models.ledger import LedgerTransaction
    body = {"schema_version": 1, "merchant_id": "m" * 128, "balance": 10**15, "currency": "CNY"}
    assert publish("merchant.balance_changed", body).status == "admitted"
    keys = [t.idempotency_key for t in LedgerTransaction.select()]
    assert keys and all(len(key) <= LedgerTransaction.idempotency_key.max_length for key in keys)


def test_a_compression_bomb_is_refused_before_it_fills_the_consumers_memory(app) -> None:
    import zlib

    from kombu.message import Message

    from messages.intake import MAX_BODY_BYTES
    from workers.intake import IntakeConsumer

    IntakeConsumer(app, connection=None)  # bounds kombu's decoders for this process
    # Given 1 GiB of zeros gzip-compressed to about a megabyte, and an honest small compressed complaint
    chunk = zlib.compressobj()
    bomb = b"".join(chunk.compress(b"\0" * (1 << 24)) for _ in range(64)) + chunk.flush()
    assert len(bomb) < 2 * MAX_BODY_BYTES
    honest = Message(body=zlib.compress(b'{"schema_version": 1}'), headers={"compression": "application/x-gzip"})
    # When kombu builds the messages
    exploded = Message(body=bomb, headers={"compression": "application/x-gzip"})
    # Then the bomb stops at the intake's size limit and is a decode error (the rejected store's way in)
    assert exploded.errors and "inflates past" in str(exploded.errors[0][1])
    assert not honest.errors and honest.body == b'{"schema_version": 1}'


# -- group commit: a batch of deliveries in one transaction ---------------------------------------

class Held:
    """A kombu delivery as the consumer holds it: it records whether it was acked or requeued."""

    def __init__(self, routing_key: str, body: dict | bytes, message_id: str | None, journal: list | None = None,
                 headers: dict | None = None) -> None:
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.delivery_info = {"routing_key": routing_key}
        self.properties = {"message_id": message_id} if message_id else {}
        self.headers = headers or {}
        self.journal = journal if journal is not None else []
        self.acked = self.requeued = False

    def ack(self, multiple: bool = False) -> None:
        assert not (self.acked or self.requeued)
        self.acked = True
        self.journal.append(("ack", self.properties.get("message_id")))

    def requeue(self) -> None:
        assert not (self.acked or self.requeued)
        self.requeued = True
        self.journal.append(("requeue", self.properties.get("message_id")))


@pytest.fixture
def consumer(app, monkeypatch):
    from workers import intake as intake_module
    monkeypatch.setattr(intake_module.time, "sleep", lambda seconds: None)  # the pause before a retry
    return intake_module.IntakeConsumer(app, connection=None)


def deliver(consumer, *messages: Held) -> list[Held]:
    """Hand `messages` to the consumer as one prefetched batch, and admit it."""
    for message in messages:
        consumer.on_message(message)
    consumer.flush()
    return list(messages)


def test_a_batch_with_a_bad_message_in_the_middle_admits_the_others_and_stores_the_bad_one(
        app, consumer, complaint) -> None:
    # Given three deliveries prefetched together, the middle one of the wrong shape
    first, bad, last = complaint(external_ref="B1"), complaint(external_ref="B2"), complaint(external_ref="B3")
    del bad["order"]["amount"]
    messages = deliver(consumer, Held("complaint.submitted", first, "b-1"), Held("complaint.submitted", bad, "b-2"),
                       Held("complaint.submitted", last, "b-3"))
    # Then the others are admitted, the bad one alone is stored with its reason, and all are acked
    assert sorted(t.external_ref for t in Ticket.select()) == ["B1", "B3"]
    rejected = RejectedMessage.get(RejectedMessage.message_id == "b-2")
    assert "order.amount" in rejected.reasons and json.loads(bytes(rejected.body)) == bad
    assert {m.message_id for m in ProcessedMessage.select()} == {"b-1", "b-3"}
    assert all(m.acked and not m.requeued for m in messages)


def test_a_message_whose_effect_the_database_refuses_halfway_rolls_back_alone(
        app, consumer, complaint, monkeypatch) -> None:
    import peewee

    import models.admission

    real_open_ticket = models.admission.open_ticket

    def refuse_after_writing(fields, *args, **kwargs):
        outcome = real_open_ticket(fields, *args, **kwargs)  # the ticket, its audit row, its claim...
        if fields["external_ref"] == "H2":
            raise peewee.DataError("value too long for type character varying(64)")  # ...then refused
        return outcome
    monkeypatch.setattr(models.admission, "open_ticket", refuse_after_writing)
    messages = deliver(consumer, *(Held("complaint.submitted", complaint(external_ref=f"H{n}"), f"h-{n}")
                                   for n in (1, 2, 3)))
    # Then what the refused message wrote is gone, its neighbours' rows are kept, and all are acked
    assert sorted(t.external_ref for t in Ticket.select()) == ["H1", "H3"]
    assert {m.message_id for m in ProcessedMessage.select()} == {"h-1", "h-3"}
    assert RejectedMessage.get(RejectedMessage.message_id == "h-2").reasons["_database"]
    assert TicketEvent.select().count() == 2
    assert all(m.acked for m in messages)


def test_duplicates_inside_one_batch_are_recognised(app, consumer, complaint) -> None:
    # Given one batch holding a complaint, its redelivery (same message id), the same complaint
    # resent under another message id, and a second complaint about the same order
    body = complaint(external_ref="D1", order={"order_id": "O-D"})
    other = complaint(external_ref="D2", order={"order_id": "O-D"})
    messages = deliver(consumer, Held("complaint.submitted", body, "d-1"), Held("complaint.submitted", body, "d-1"),
                       Held("complaint.submitted", body, "d-2"), Held("complaint.submitted", other, "d-3"))
    # Then one ticket is opened, the second complaint joins it, and nothing is rejected
    ticket = Ticket.get()
    assert Ticket.select().count() == 1 and ticket.external_ref == "D1"
    assert [(c.source, c.external_ref) for c in LinkedComplaint.select()] == [("shop", "D2")]
    assert audit_actions(ticket.id) == ["submit", "link_complaint"]
    assert {m.message_id for m in ProcessedMessage.select()} == {"d-1", "d-2", "d-3"}
    assert RejectedMessage.select().count() == 0 and all(m.acked for m in messages)


def test_a_batch_sees_what_earlier_batches_admitted(app, consumer, complaint) -> None:
    body = complaint(external_ref="E1", order={"order_id": "O-E"})
    deliver(consumer, Held("complaint.submitted", body, "e-1"), Held("complaint.submitted", complaint(), "e-2"))
    deliver(consumer, Held("complaint.submitted", body, "e-3"),
            Held("complaint.submitted", complaint(external_ref="E4", order={"order_id": "O-E"}), "e-4"))
    ticket = Ticket.get(Ticket.external_ref == "E1")
    assert Ticket.select().count() == 2 and audit_actions(ticket.id) == ["submit", "link_complaint"]


def test_a_complaint_after_a_withdrawal_in_the_same_batch_does_not_join_the_withdrawn_dispute(
        app, consumer, complaint) -> None:
    # Given an open dispute about order O-W (admitted by an earlier batch)
    deliver(consumer, Held("complaint.submitted", complaint(external_ref="W1", order={"order_id": "O-W"}), "w-1"))
    # When one batch holds the buyer's withdrawal of it and then a new complaint about the same order
    deliver(consumer, Held("customer.withdrew", {"schema_version": 1, "source": "shop", "external_ref": "W1",
                                                 "user_id": "u1"}, "w-2"),
            Held("complaint.submitted", complaint(external_ref="W3", order={"order_id": "O-W"}), "w-3"),
            Held("complaint.submitted", complaint(external_ref="W4", order={"order_id": "O-W"}), "w-4"))
    # Then the new complaint opens a ticket of its own (the next one joins that), nothing is rejected
    assert [(r.message_id, r.reasons) for r in RejectedMessage.select()] == []
    first, second = Ticket.select().order_by(Ticket.id)
    assert audit_actions(first.id) == ["submit", "withdraw"] and first.state == "withdrawn"
    assert second.external_ref == "W3" and audit_actions(second.id) == ["submit", "link_complaint"]


def test_when_the_database_fails_the_whole_batch_is_requeued_and_nothing_is_kept(
        app, consumer, complaint, monkeypatch) -> None:
    import peewee

    import models.admission

    real_open_ticket = models.admission.open_ticket

    def database_gone(fields, *args, **kwargs):
        if fields["external_ref"] == "F2":
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return real_open_ticket(fields, *args, **kwargs)
    monkeypatch.setattr(models.admission, "open_ticket", database_gone)
    messages = deliver(consumer, *(Held("complaint.submitted", complaint(external_ref=f"F{n}"), f"f-{n}")
                                   for n in (1, 2, 3)))
    # Then nothing of the batch is stored (not even the message before the failure) and nothing is acked
    assert all(m.requeued and not m.acked for m in messages)
    assert Ticket.select().count() == 0 and ProcessedMessage.select().count() == 0
    assert RejectedMessage.select().count() == 0
    # And once the database is back, the redelivered batch is admitted whole
    monkeypatch.setattr(models.admission, "open_ticket", real_open_ticket)
    again = deliver(consumer, *(Held("complaint.submitted", json.loads(m.body), m.properties["message_id"])
                                for m in messages))
    assert all(m.acked for m in again) and Ticket.select().count() == 3


class TestBatchUnderPushRouting:
    @pytest.fixture
    def policy(self, make_policy):
        return make_policy(routing={"mode": "push"})

    def test_the_arrivals_of_a_batch_are_sent_once_it_committed_and_was_acked(
            self, app, consumer, complaint, monkeypatch) -> None:
        import models.admission

        journal: list = []
        real_send = models.admission.send_dispatches

        def send(broker, ids):
            ids = list(ids)
            journal.append(("send", len(ids), Dispatch.select().count()))
            return real_send(broker, ids)
        monkeypatch.setattr(models.admission, "send_dispatches", send)
        messages = deliver(consumer, *(Held("complaint.submitted", complaint(negotiation="failed"), f"p-{n}", journal)
                                       for n in range(3)))
        # Then each message is acked, then the three arrivals go out in one send, after their rows committed
        assert journal == [("ack", "p-0"), ("ack", "p-1"), ("ack", "p-2"), ("send", 3, 3)]
        assert app.broker.queues["stage1"].qsize() == 3
        assert all(d.sent_at is not None for d in Dispatch.select()) and all(m.acked for m in messages)


def test_the_consumer_admits_what_the_broker_prefetched_as_one_batch(app, complaint, monkeypatch) -> None:
    from kombu import Exchange, Producer, Queue

    from workers import intake as intake_module

    # Given five complaints already waiting on the (in-memory) intake queue
    exchange = Exchange("test.intake.batch", type="topic")
    queue = Queue("test.intake.batch", exchange=exchange, routing_key="#")
    batches: list[int] = []
    real_admit_batch = intake_module.Intake.admit_batch

    def spy(self, deliveries, committed=None):
        batches.append(len(deliveries))
        return real_admit_batch(self, deliveries, committed)
    monkeypatch.setattr(intake_module.Intake, "admit_batch", spy)
    with app.kombu_connection() as connection:
        producer = Producer(connection.channel(), exchange=exchange)
        queue(producer.channel).declare()
        for n in range(5):
            producer.publish(json.dumps(complaint(external_ref=f"Q{n}")).encode(), routing_key="complaint.submitted",
                             message_id=f"q-{n}", declare=[queue])
        # When the consumer wakes up once
        consumer = intake_module.IntakeConsumer(app, app.kombu_connection(), queue=queue, linger=0.2, max_wait=1.0)
        consumer.should_stop = False
        for _ in consumer.consume(limit=1, timeout=5):
            pass
        consumer.connection.release()
    # Then all five were admitted in one transaction, in the order they were published
    assert batches == [5]
    assert [t.external_ref for t in Ticket.select().order_by(Ticket.id)] == [f"Q{n}" for n in range(5)]
