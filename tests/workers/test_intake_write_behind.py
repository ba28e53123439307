"""A batch of complaints is written behind (models.write_behind): the same tickets, rows and
duplicates as one message at a time, for a handful of statements per batch — on SQLite and
PostgreSQL, and the careful way again whenever the database refuses the batch's rows."""
from __future__ import annotations

import json
import logging

import pytest

from models.admission import BatchLookups, Delivery, admit_batch
from models.audit import TicketEvent
from models.evidence import EvidenceItem
from models.intake import ProcessedMessage, RejectedMessage
from models.outbox import OutboxEvent
from models.ticket import LinkedComplaint, Ticket
from models.timer import Timer
from workers.intake import Intake
from tests.statements import Statements


def deliveries(complaint, refs: list[str], **overrides) -> list[Delivery]:
    return [Delivery("complaint.submitted", json.dumps(complaint(external_ref=ref, **overrides)).encode(), f"m-{ref}")
            for ref in refs]


def test_a_batch_of_new_complaints_costs_a_few_statements_and_stores_every_row(db_app, complaint) -> None:
    batch = deliveries(complaint, [f"W{n}" for n in range(40)])
    with Statements() as statements:
        admissions = admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    assert [a.status for a in admissions] == ["admitted"] * 40
    # One read of the batch's keys and message ids, one reservation of ids, one INSERT per table
    # (ticket, timer, audit row, outbox row, message id) and the savepoint around the reads.
    assert statements.count <= 12
    tickets = list(Ticket.select().order_by(Ticket.id))
    assert [t.external_ref for t in tickets] == [f"W{n}" for n in range(40)]
    assert [a.ticket_id for a in admissions] == [t.id for t in tickets]
    assert all(t.state == "negotiating" and t.version == 1 for t in tickets)
    assert TicketEvent.select().where(TicketEvent.action == "submit").count() == 40
    assert OutboxEvent.select().where(OutboxEvent.routing_key == "ticket.negotiating").count() == 40
    assert Timer.select().where(Timer.action == "merchant_response_deadline").count() == 40
    assert ProcessedMessage.select().count() == 40
    # The ids a batch reserved are not handed out again: a complaint admitted on its own gets a new one
    single = Intake(db_app).admit("complaint.submitted", json.dumps(complaint(external_ref="W-after")).encode(),
                                  "m-W-after")
    assert single.status == "admitted" and single.ticket_id not in {t.id for t in tickets}


def test_a_batch_redelivered_whole_admits_nothing_twice(db_app, complaint) -> None:
    batch = deliveries(complaint, ["R1", "R2", "R3"])
    admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    with Statements() as statements:
        again = admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    assert [a.status for a in again] == ["duplicate"] * 3 and statements.count <= 6
    assert Ticket.select().count() == 3 and TicketEvent.select().count() == 3


def test_complaints_of_one_order_in_one_batch_make_one_dispute(db_app, complaint) -> None:
    batch = deliveries(complaint, ["O1", "O2", "O3"], order={"order_id": "O-same"})
    admissions = admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    assert [a.status for a in admissions] == ["admitted"] * 3
    ticket = Ticket.get()
    assert ticket.external_ref == "O1" and {a.ticket_id for a in admissions} == {ticket.id}
    assert sorted(c.external_ref for c in LinkedComplaint.select()) == ["O2", "O3"]


def test_evidence_that_came_with_a_complaint_is_kept(db_app, complaint) -> None:
    evidence = [{"kind": "photo", "uri": "https://files.example/a.jpg"}]
    admit_batch(deliveries(complaint, ["V1", "V2"], evidence=evidence), policy=db_app.policy, broker=db_app.broker)
    items = list(EvidenceItem.select().order_by(EvidenceItem.id))
    assert [(i.ticket.external_ref, i.kind, i.round) for i in items] == [("V1", "photo", 0), ("V2", "photo", 0)]


def test_a_rejected_complaint_in_the_middle_leaves_no_rows_behind(db_app, complaint) -> None:
    batch = deliveries(complaint, ["J1", "J2", "J3"])
    broken = json.loads(batch[1].body)
    broken["claimed_amount"] = -5
    batch[1] = batch[1]._replace(body=json.dumps(broken).encode())
    admissions = admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    assert [a.status for a in admissions] == ["admitted", "rejected", "admitted"]
    assert sorted(t.external_ref for t in Ticket.select()) == ["J1", "J3"]
    assert TicketEvent.select().count() == 2 and Timer.select().count() == 2
    assert RejectedMessage.get().message_id == "m-J2"
    assert {m.message_id for m in ProcessedMessage.select()} == {"m-J1", "m-J3"}


def test_a_message_another_consumer_admitted_meanwhile_makes_the_batch_go_again_one_by_one(
        db_app, complaint, monkeypatch, caplog) -> None:
    # Given another consumer records one of the batch's message ids after this batch read them
    real_read = BatchLookups._read

    def raced(self, identities, disputes):
        real_read(self, identities, disputes)
        ProcessedMessage.create(message_id="m-K2", routing_key="complaint.submitted")
    monkeypatch.setattr(BatchLookups, "_read", raced)
    with caplog.at_level(logging.WARNING, logger="disputes.intake"):
        admissions = admit_batch(deliveries(complaint, ["K1", "K2", "K3"]), policy=db_app.policy,
                                 broker=db_app.broker)
    # Then the batch is admitted again message by message: the raced one is a duplicate, nothing twice
    assert [a.status for a in admissions] == ["admitted", "duplicate", "admitted"]
    assert sorted(t.external_ref for t in Ticket.select()) == ["K1", "K3"]
    assert TicketEvent.select().count() == 2 and ProcessedMessage.select().count() == 3
    assert "admitted again one by one" in caplog.text


@pytest.mark.parametrize("field, value", [("user_id", "u" * 300)])
def test_a_value_the_database_refuses_in_a_held_row_rejects_that_message_alone(
        db_app, complaint, field, value) -> None:
    batch = deliveries(complaint, ["X1", "X2", "X3"])
    body = json.loads(batch[1].body)
    body[field] = value
    batch[1] = batch[1]._replace(body=json.dumps(body).encode())
    admissions = admit_batch(batch, policy=db_app.policy, broker=db_app.broker)
    assert admissions[0].status == admissions[2].status == "admitted"
    assert admissions[1].status == "rejected"
    assert sorted(t.external_ref for t in Ticket.select()) == ["X1", "X3"]
