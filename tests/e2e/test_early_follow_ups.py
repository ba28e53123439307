"""Messages out of order (SPEC §4) on RabbitMQ + Redis + PostgreSQL, every role its own process.

A follow-up that names its ticket by ``source`` + ``external_ref`` before that complaint was
admitted is held, and applied in arrival order once the complaint lands; one whose complaint
never comes is rejected after ``intake.early_message_ttl``; and what is held survives the
intake process being killed. Upstream publishes to ``op.intake``, the ticket is read through the
HTTP API, what downstream sees is read from ``op.events``, and what the operator sees through
``disputes intake held`` / ``disputes intake rejected`` and ``/metrics``.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.conftest import Agent, Stack, complaint_body, wait_for

pytestmark = pytest.mark.servers

PHOTO = {"kind": "photo", "uri": "https://files.example.com/e2e/early-seam.jpg"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def evidence_for(body: dict) -> dict:
    """The merchant's ``evidence.submitted`` naming the complaint `body` by its source and reference."""
    return {"schema_version": 1, "source": body["source"], "external_ref": body["external_ref"],
            "party": "merchant", "items": [PHOTO]}


def response_for(body: dict, option: str = "platform_judgment") -> dict:
    """The merchant's ``merchant.responded`` naming the complaint `body` by its source and reference."""
    return {"schema_version": 1, "source": body["source"], "external_ref": body["external_ref"],
            "merchant_id": body["merchant_id"], "option": option}


def held_ids(stack: Stack) -> list[str]:
    """Message ids of the follow-ups held now, oldest first (read from the database)."""
    from models.intake import HeldMessage
    with stack.app.db.connection_context():
        return [row.message_id for row in HeldMessage.select().order_by(HeldMessage.id)]


def wait_held(stack: Stack, message_ids: list[str], timeout: float = 15) -> None:
    """Wait until exactly `message_ids` are held, in that order."""
    wait_for(lambda: held_ids(stack) == message_ids, timeout, f"{message_ids} to be held",
             on_timeout=lambda: f"held: {held_ids(stack)}\n{stack.logs()}")


def processed(stack: Stack, message_id: str) -> bool:
    from models.intake import ProcessedMessage
    with stack.app.db.connection_context():
        return ProcessedMessage.select().where(ProcessedMessage.message_id == message_id).exists()


def rejected(stack: Stack, message_id: str) -> bool:
    from models.intake import RejectedMessage
    with stack.app.db.connection_context():
        return RejectedMessage.select().where(RejectedMessage.message_id == message_id).exists()


def metric(stack: Stack, name: str) -> float:
    """One unlabelled value of ``GET /metrics``."""
    response = stack.client.get("/metrics")
    assert response.status_code == 200
    found = re.search(rf"^{re.escape(name)} (\S+)$", response.get_data(as_text=True), re.MULTILINE)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


def cli_rows(stack: Stack, *args: str) -> list[list[str]]:
    """The tab-separated rows ``disputes ARGS`` printed."""
    return [line.split("\t") for line in stack.cli(*args).stdout.splitlines() if "\t" in line]


def trail(stack: Stack, ticket_id: int, agent: Agent) -> list[tuple[str, str, Any, str]]:
    rows = stack.api("GET", f"/tickets/{ticket_id}/events", agent, expect=200)[1]
    assert [e["version"] for e in rows] == list(range(1, len(rows) + 1))
    return [(e["actor"], e["action"], e["from_state"], e["to_state"]) for e in rows]


def published(stack: Stack, ticket_id: int, until: str) -> list[str]:
    """The ticket's routing keys on ``op.events`` (notifications aside), once `until` is among them."""
    def seen() -> list[str] | None:
        got = [k for k, _ in stack.tap.of(ticket_id) if not k.startswith("notify.")]
        return got if until in got else None
    return wait_for(seen, 15, f"{until} for ticket {ticket_id} on op.events",
                    on_timeout=lambda: f"seen: {[k for k, _ in stack.tap.of(ticket_id)]}\n{stack.logs()}")


#: What a complaint answered early by evidence, then "let the platform judge", looks like.
EVIDENCE_THEN_JUDGMENT = [
    ("system", "submit", None, "negotiating"),
    ("merchant", "submit_evidence", "negotiating", "negotiating"),
    ("merchant", "platform_judgment", "negotiating", "awaiting_takeover"),
]


def assert_answered_early(stack: Stack, body: dict, reader: Agent, evidence_id: str, response_id: str) -> int:
    """The complaint `body` has its ticket, with the early evidence and response applied in arrival
    order, and downstream saw the ticket go to the floor; returns the ticket id."""
    tid = stack.find_ticket(body["source"], body["external_ref"], reader)["id"]
    t = stack.wait_state(tid, "awaiting_takeover", reader)
    assert t["negotiation_option"] == "platform_judgment" and t["waiting_on"] == "stage1", t
    assert [(e["party"], e["kind"], e["uri"]) for e in t["evidence"]] == [("merchant", PHOTO["kind"], PHOTO["uri"])]
    assert trail(stack, tid, reader) == EVIDENCE_THEN_JUDGMENT
    assert processed(stack, evidence_id) and processed(stack, response_id)
    assert published(stack, tid, "ticket.awaiting_takeover") == ["ticket.negotiating", "ticket.awaiting_takeover"]
    return tid


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------

@pytest.mark.deadlines(merchant_response="1h")
def test_follow_ups_sent_before_their_complaint_are_held_then_applied_in_order_when_it_lands(stack: Stack) -> None:
    # Complaint B's follow-ups and B itself are all queued before the intake starts, so they normally
    # reach it in one prefetched batch (held, then released in the complaint's transaction).
    b = complaint_body()
    b_evidence = stack.publish("evidence.submitted", evidence_for(b))
    b_response = stack.publish("merchant.responded", response_for(b))
    stack.publish("complaint.submitted", b)

    stack.start_intake()
    stack.start_scheduler()
    (reader,) = stack.add_agents(("e2e-early-reader", 1))
    assert_answered_early(stack, b, reader, b_evidence, b_response)

    # Complaint A: the merchant's evidence and answer come first, the buyer's complaint later.
    a = complaint_body()
    a_evidence = stack.publish("evidence.submitted", evidence_for(a))
    a_response = stack.publish("merchant.responded", response_for(a))
    wait_held(stack, [a_evidence, a_response])
    stack.assert_alive()

    # While they wait: no ticket, nothing rejected, and the operator sees them held.
    assert stack.api("GET", f"/tickets?source={a['source']}&external_ref={a['external_ref']}", reader,
                     expect=200)[1] == []
    assert metric(stack, "disputes_intake_held") == 2
    listing = cli_rows(stack, "intake", "held")
    assert [(row[2], row[3]) for row in listing] == [("evidence.submitted", a_evidence),
                                                     ("merchant.responded", a_response)], listing
    assert all(f"{a['source']}/{a['external_ref']}" in row[4] for row in listing), listing

    # When the complaint lands, both are applied to its ticket, in the order they arrived.
    stack.publish("complaint.submitted", a)
    assert_answered_early(stack, a, reader, a_evidence, a_response)
    assert held_ids(stack) == [] and metric(stack, "disputes_intake_held") == 0
    assert cli_rows(stack, "intake", "rejected") == []
    assert metric(stack, "disputes_intake_rejected_waiting") == 0
    stack.assert_alive()


@pytest.mark.deadlines(merchant_response="1h")
def test_a_follow_up_whose_complaint_never_comes_is_rejected_after_the_ttl(stacks: Any) -> None:
    with stacks("ttl", policy={"intake": {"early_message_ttl": "2s"}}) as stack:
        stack.start_intake()
        stack.start_scheduler()
        (reader,) = stack.add_agents(("e2e-ttl-reader", 1))

        # Evidence for a complaint that does not come (in time).
        late = complaint_body()
        sent = time.monotonic()
        orphan = stack.publish("evidence.submitted", evidence_for(late))
        wait_held(stack, [orphan])

        # After intake.early_message_ttl (2 s) the scheduler rejects it, saying why.
        wait_for(lambda: not held_ids(stack) and rejected(stack, orphan), 15, f"{orphan} to be rejected after the TTL",
                 on_timeout=lambda: f"held: {held_ids(stack)}\n{stack.logs()}")
        assert time.monotonic() - sent >= 2.0, "rejected before intake.early_message_ttl had passed"
        (row,) = [row for row in cli_rows(stack, "intake", "rejected") if row[3] == orphan]
        rejected_id, _at, routing_key, _mid, status, reasons, _preview = row[:7]
        assert (routing_key, status) == ("evidence.submitted", "rejected"), row
        reasons = json.loads(reasons)
        assert list(reasons) == ["ticket_id"], reasons
        assert "intake.early_message_ttl" in reasons["ticket_id"][0], reasons
        assert late["external_ref"] in reasons["ticket_id"][0], reasons
        assert held_ids(stack) == [] and cli_rows(stack, "intake", "held") == []
        assert metric(stack, "disputes_intake_held") == 0
        assert metric(stack, "disputes_intake_rejected_waiting") == 1
        stack.assert_alive()

        # The complaint that finally comes opens its ticket without the rejected evidence ...
        stack.publish("complaint.submitted", late)
        tid = stack.find_ticket(late["source"], late["external_ref"], reader)["id"]
        assert trail(stack, tid, reader) == [("system", "submit", None, "negotiating")]
        assert stack.ticket(tid, reader)["evidence"] == []
        # ... which the operator may now replay onto it.
        stack.cli("intake", "replay", rejected_id)
        wait_for(lambda: len(trail(stack, tid, reader)) == 2, 15, "the replayed evidence", interval=0.2,
                 on_timeout=stack.logs)
        assert trail(stack, tid, reader)[-1] == ("merchant", "submit_evidence", "negotiating", "negotiating")
        assert cli_rows(stack, "intake", "rejected") == []
        stack.assert_alive()


@pytest.mark.deadlines(merchant_response="1h")
def test_held_follow_ups_survive_the_intake_being_killed(stack: Stack) -> None:
    intake = stack.start_intake()
    stack.start_scheduler()
    (reader,) = stack.add_agents(("e2e-restart-reader", 1))

    # The evidence is held; then the intake process dies (SIGKILL: no goodbye).
    body = complaint_body()
    early_evidence = stack.publish("evidence.submitted", evidence_for(body))
    wait_held(stack, [early_evidence])
    intake.kill()

    # While it is down, the merchant's answer and then the complaint are queued in RabbitMQ.
    early_response = stack.publish("merchant.responded", response_for(body))
    stack.publish("complaint.submitted", body)
    assert held_ids(stack) == [early_evidence]  # nothing applied them meanwhile
    assert stack.api("GET", f"/tickets?source={body['source']}&external_ref={body['external_ref']}", reader,
                     expect=200)[1] == []

    # A new intake process: nothing held was lost, and everything applies in arrival order.
    stack.start_intake()
    assert_answered_early(stack, body, reader, early_evidence, early_response)
    assert held_ids(stack) == [] and metric(stack, "disputes_intake_held") == 0
    assert cli_rows(stack, "intake", "rejected") == []
    stack.assert_alive()
