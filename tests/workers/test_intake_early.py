"""Messages out of order (SPEC §4): a follow-up that comes before its complaint is held, applied in
arrival order once the complaint is admitted, and rejected only when still unmatched after
``intake.early_message_ttl``."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from desk.metrics import render_metrics
from messages import SIGNATURE_HEADER, sign
from models import admission
from models.admission import Delivery, admit_batch
from models.audit import TicketEvent
from models.intake import HeldMessage, RejectedMessage
from models.ticket import Ticket
from scheduler.loop import Scheduler


def evidence(**ref) -> dict:
    return {"schema_version": 1, "party": "merchant", **ref,
            "items": [{"kind": "photo", "uri": "https://files.example/e1.jpg"}]}


def withdrawal(**ref) -> dict:
    return {"schema_version": 1, "user_id": "u1", **ref}


def actions(ticket_id: int) -> list[str]:
    return [e.action for e in TicketEvent.select().where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.version)]


def delivery(routing_key: str, body: dict, message_id: str) -> Delivery:
    return Delivery(routing_key, json.dumps(body).encode(), message_id, {})


def test_evidence_sent_before_its_complaint_is_held_then_applied_when_the_complaint_lands(
        app, publish, complaint) -> None:
    # Given the merchant's evidence arrives before the buyer's complaint it names
    early = publish("evidence.submitted", evidence(source="shop", external_ref="E1"), "e-1")
    # Then it is held, not rejected
    assert early.status == "held" and RejectedMessage.select().count() == 0
    assert HeldMessage.select().count() == 1
    # When the complaint is admitted
    ticket_id = publish("complaint.submitted", complaint(external_ref="E1"), "c-1").ticket_id
    # Then the evidence is applied to the new ticket, and nothing stays held
    assert actions(ticket_id) == ["submit", "submit_evidence"]
    assert HeldMessage.select().count() == 0 and RejectedMessage.select().count() == 0


def test_several_early_follow_ups_are_applied_in_arrival_order(app, publish, complaint) -> None:
    # Given evidence, then the buyer's withdrawal, both before the complaint
    publish("evidence.submitted", evidence(source="shop", external_ref="E2"), "e-2")
    publish("customer.withdrew", withdrawal(source="shop", external_ref="E2"), "w-2")
    # When the complaint lands
    ticket_id = publish("complaint.submitted", complaint(external_ref="E2"), "c-2").ticket_id
    # Then both apply, evidence first: the ticket ends withdrawn
    assert actions(ticket_id) == ["submit", "submit_evidence", "withdraw"]
    assert Ticket.get_by_id(ticket_id).state == "withdrawn"


def test_in_one_batch_a_held_follow_up_applies_before_the_messages_after_its_complaint(db_app, complaint) -> None:
    # Given one prefetched batch: a withdrawal (early), the complaint, then evidence for it
    batch = [delivery("customer.withdrew", withdrawal(source="shop", external_ref="B1"), "w-b1"),
             delivery("complaint.submitted", complaint(external_ref="B1"), "c-b1"),
             delivery("evidence.submitted", evidence(source="shop", external_ref="B1"), "e-b1")]
    # When it is admitted in one transaction
    results = admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    # Then the withdrawal, which arrived first, is applied first, so the later evidence finds a
    # withdrawn ticket and is refused
    assert [r.status for r in results] == ["held", "admitted", "rejected"]
    ticket_id = results[1].ticket_id
    assert actions(ticket_id) == ["submit", "withdraw"]
    assert "_state" in results[2].reasons
    assert HeldMessage.select().count() == 0


def test_a_held_follow_up_delivered_again_is_held_once(app, publish, complaint) -> None:
    body = evidence(source="shop", external_ref="E3")
    assert publish("evidence.submitted", body, "e-3").status == "held"
    assert publish("evidence.submitted", body, "e-3").status == "duplicate"
    ticket_id = publish("complaint.submitted", complaint(external_ref="E3"), "c-3").ticket_id
    assert actions(ticket_id) == ["submit", "submit_evidence"]


def test_a_follow_up_naming_an_unknown_ticket_id_is_rejected_at_once(app, publish) -> None:
    # A ticket id is ours: no complaint can be on its way for an id we never gave
    result = publish("evidence.submitted", evidence(ticket_id=424242), "e-4")
    assert result.status == "rejected" and "ticket_id" in result.reasons
    assert HeldMessage.select().count() == 0


@pytest.fixture
def policy(make_policy):
    """Source ``signed-shop`` must sign its messages; holds last 10 minutes."""
    return make_policy(intake={"secrets": {"signed-shop": "k3y"}, "early_message_ttl": "10m"})


def test_an_early_follow_up_with_a_bad_signature_is_rejected_at_once_not_held(app, publish) -> None:
    body = json.dumps(evidence(source="signed-shop", external_ref="E5")).encode()
    result = publish("evidence.submitted", body, "e-5", {SIGNATURE_HEADER: "0" * 64})
    assert result.status == "rejected" and SIGNATURE_HEADER in result.reasons
    signed = publish("evidence.submitted", body, "e-5b", {SIGNATURE_HEADER: sign("k3y", body)})
    assert signed.status == "held"


def test_a_follow_up_whose_complaint_never_comes_is_rejected_after_the_ttl(app, publish, clock) -> None:
    # Given evidence held for a complaint that does not come
    publish("evidence.submitted", evidence(source="shop", external_ref="NEVER"), "e-6")
    scheduler = Scheduler(app)
    # When the scheduler looks before the TTL, it stays held
    assert scheduler.tick()["held"] == 0 and HeldMessage.select().count() == 1
    # And once intake.early_message_ttl (10m) has passed it is rejected, naming the ticket and the wait
    clock.advance(timedelta(minutes=11).total_seconds())
    assert scheduler.tick()["held"] == 1
    assert HeldMessage.select().count() == 0
    row = RejectedMessage.get()
    assert row.message_id == "e-6" and "early_message_ttl" in row.reasons["ticket_id"][0]


def test_the_reconciler_applies_what_a_crash_left_held_after_its_complaint_landed(
        app, publish, complaint) -> None:
    # Given a held withdrawal, and its complaint admitted without the release (a crash between
    # the complaint's commit and the release)
    publish("customer.withdrew", withdrawal(source="shop", external_ref="E7"), "w-7")
    result, _ = admission.admit_unsent("complaint.submitted", json.dumps(complaint(external_ref="E7")).encode(),
                                       "c-7", policy=app.policy)
    assert actions(result.ticket_id) == ["submit"] and HeldMessage.select().count() == 1
    # When the scheduler's housekeeping runs
    assert Scheduler(app).tick()["held"] == 1
    # Then the withdrawal is applied
    assert actions(result.ticket_id) == ["submit", "withdraw"]
    assert HeldMessage.select().count() == 0


def test_a_follow_up_naming_a_complaint_that_joins_an_open_ticket_applies_to_that_ticket(
        app, publish, complaint) -> None:
    # Given an open ticket about order O-77, and evidence naming a second complaint about it
    first = publish("complaint.submitted", complaint(external_ref="FIRST", order={"order_id": "O-77"}), "c-8")
    publish("evidence.submitted", evidence(source="shop", external_ref="SECOND"), "e-8")
    # When the second complaint arrives and joins the open ticket
    second = publish("complaint.submitted", complaint(external_ref="SECOND", order={"order_id": "O-77"}), "c-8b")
    # Then the held evidence is applied to that ticket
    assert second.ticket_id == first.ticket_id
    assert actions(first.ticket_id) == ["submit", "link_complaint", "submit_evidence"]


def test_held_follow_ups_are_counted_in_metrics(app, publish) -> None:
    publish("evidence.submitted", evidence(source="shop", external_ref="E9"), "e-9")
    text = render_metrics(app).decode()
    assert "disputes_intake_held 1.0" in text
    assert "disputes_intake_held_oldest_age_seconds" in text
