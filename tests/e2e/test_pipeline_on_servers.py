"""One complaint through the whole floor on RabbitMQ + Redis + PostgreSQL, every role its own process.

``disputes intake`` (kombu on RabbitMQ), ``disputes scheduler`` and one ``dramatiq`` command
loading every stage module (Redis broker) run as separate processes against PostgreSQL; the
agents act through the HTTP API; upstream publishes to ``op.intake``; what downstream sees is
captured from ``op.events``.
"""
from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import Agent, Stack, complaint_body, wait_for

pytestmark = pytest.mark.servers

# Every dramatiq queue of the Procfile, notifications included (a dramatiq process without --queues consumes
# every declared queue, so it must load every actor).
ALL_STAGE_MODULES = ["workers.negotiation", "workers.stage1", "workers.stage2", "workers.stage3", "workers.stage4",
                     "workers.notify"]


def choice(options: dict, action: str, param: str, prefer: str | None = None) -> str:
    """A code of `param` of `action` as ``GET /options/{stage}`` offers it (`prefer` when offered)."""
    by_action = {a["action"]: a for a in options["actions"]}
    codes = [c["code"] for c in by_action[action]["params"][param]["choices"]]
    assert codes, f"{options['stage']}.{action}.{param} offers no choices"
    return prefer if prefer in codes else codes[0]


def act(stack: Stack, ticket: dict, agent: Agent, action: str, params: dict, qc: dict | None) -> None:
    body = {"action": action, "expected_version": ticket["version"], "params": params}
    if qc is not None:
        body["qc"] = qc
    status, answer = stack.api("POST", f"/tickets/{ticket['id']}/actions", agent, body, expect=202)
    assert answer["accepted"] is True and answer["ticket_id"] == ticket["id"]


def claim(stack: Stack, agent: Agent, ticket_id: int, state: str) -> dict:
    """``POST /me/claim``: the one waiting ticket becomes the agent's."""
    _, claimed = stack.api("POST", "/me/claim", agent, expect=200)
    assert claimed["id"] == ticket_id and claimed["state"] == state, claimed
    assert claimed["assignee"] == agent.id
    return claimed


def actor_kind(actor: str) -> str:
    return "agent" if actor.startswith("agent:") else actor


@pytest.mark.deadlines(merchant_response="2s", evidence="4s")
def test_one_complaint_through_the_whole_floor(stack: Stack) -> None:
    stack.start_intake()
    stack.start_scheduler()
    stack.start_workers("workers", ALL_STAGE_MODULES, threads=4)
    s1, s2, s3, s4 = stack.add_agents(("e2e-s1", 1), ("e2e-s2", 2), ("e2e-s3", 3), ("e2e-s4", 4))

    # Upstream: a complaint whose merchant never answers.
    body = complaint_body(negotiation="pending")
    stack.publish("complaint.submitted", body)
    found = stack.find_ticket(body["source"], body["external_ref"], s1)
    tid = found["id"]

    # merchant_response deadline (2 s): scheduler -> negotiation worker -> awaiting_takeover.
    stack.wait_state(tid, "awaiting_takeover", s1)
    stack.assert_alive()

    # Stage 1: takeover, then evidence from both parties.
    t = claim(stack, s1, tid, "stage1")
    options1 = stack.api("GET", "/options/stage1", s1, expect=200)[1]
    params1 = {"dispute_status": choice(options1, "request_evidence", "dispute_status", "merchant_timed_out"),
               "category": choice(options1, "request_evidence", "category", "apparel"),
               "from": choice(options1, "request_evidence", "from", "both"),
               "items": [choice(options1, "request_evidence", "items", "photo")]}
    assert params1["from"] == "both"
    act(stack, t, s1, "request_evidence", params1, qc=None)
    t = stack.wait_state(tid, "awaiting_evidence", s1)
    assert set(t["waiting_on_all"]) == {"user", "merchant"}

    # Only the merchant answers; the buyer stays silent.
    stack.publish("evidence.submitted", {
        "schema_version": 1, "ticket_id": tid, "party": "merchant",
        "items": [{"kind": "photo", "uri": "https://files.example.com/e2e/seam.jpg"}]})

    def merchant_evidence_in() -> bool:
        return any(e["action"] == "submit_evidence" for e in stack.api("GET", f"/tickets/{tid}/events", s1)[1])
    wait_for(merchant_evidence_in, 10, "the merchant's evidence to be recorded", on_timeout=stack.logs)

    # The evidence deadline (4 s) wakes the ticket into stage 2.
    stack.wait_state(tid, "stage2", s2)
    t = claim(stack, s2, tid, "stage2")
    assert [e["party"] for e in t["evidence"]] == ["merchant"]
    act(stack, t, s2, "to_judgment", {}, qc={"verdict": "ok"})

    stack.wait_state(tid, "stage3", s3)
    # The payment system reports the merchant's balance: it covers the refund, so the judgment deducts at once.
    balance_id = stack.publish("merchant.balance_changed", {"schema_version": 1, "merchant_id": body["merchant_id"],
                                                            "balance": 50_000, "currency": "CNY"})

    def balance_synced() -> bool:
        from models.intake import ProcessedMessage
        with stack.app.db.connection_context():
            return ProcessedMessage.select().where(ProcessedMessage.message_id == balance_id).exists()
    wait_for(balance_synced, 15, "the merchant's balance report to be applied", on_timeout=stack.logs)
    t = claim(stack, s3, tid, "stage3")
    act(stack, t, s3, "judge", {"liability": "merchant", "remedy": "full_refund"}, qc={"verdict": "ok"})

    stack.wait_state(tid, "stage4", s4)
    t = claim(stack, s4, tid, "stage4")
    assert t["liability"] == "merchant" and t["remedy"] == "full_refund"
    assert t["amounts"]["refund"] == body["claimed_amount"] == t["amounts"]["refunded"]
    assert t["payment"]["issue"] is None and "verify_refund" in t["allowed_actions"]
    act(stack, t, s4, "verify_refund", {}, qc={"verdict": "ok"})

    t = stack.wait_state(tid, "closed", s1)
    assert t["waiting_on"] == "nobody" and t["allowed_actions"] == []

    # The audit trail, oldest first.
    trail = stack.api("GET", f"/tickets/{tid}/events", s1, expect=200)[1]
    steps = [(actor_kind(e["actor"]), e["action"], e["from_state"], e["to_state"]) for e in trail]
    assert steps == [
        ("system", "submit", None, "negotiating"),
        ("scheduler", "merchant_response_deadline", "negotiating", "awaiting_takeover"),
        ("agent", "take_over", "awaiting_takeover", "stage1"),
        ("agent", "request_evidence", "stage1", "awaiting_evidence"),
        ("merchant", "submit_evidence", "awaiting_evidence", "awaiting_evidence"),
        ("scheduler", "evidence_deadline", "awaiting_evidence", "stage2"),
        ("agent", "claim", "stage2", "stage2"),
        ("agent", "to_judgment", "stage2", "stage3"),
        ("agent", "claim", "stage3", "stage3"),
        ("agent", "judge", "stage3", "stage4"),
        ("agent", "claim", "stage4", "stage4"),
        ("agent", "verify_refund", "stage4", "closed"),
    ], steps
    assert [e["version"] for e in trail] == list(range(1, len(trail) + 1))
    by_action = {e["action"]: e for e in trail}
    for action, agent in (("take_over", s1), ("request_evidence", s1), ("to_judgment", s2), ("judge", s3),
                          ("verify_refund", s4)):
        assert by_action[action]["actor"] == f"agent:{agent.id}", by_action[action]
    # Each stage QC-checks the one before it: the verdict and whose work it is about.
    assert by_action["request_evidence"]["qc"] is None
    for action, about in (("to_judgment", s1), ("judge", s2), ("verify_refund", s3)):
        assert by_action[action]["qc"] == {"verdict": "ok", "reason_code": None, "about": about.id}, by_action[action]
    assert by_action["request_evidence"]["params"]["from"] == "both"
    assert by_action["judge"]["data"]["liability"] == "merchant"

    # What downstream saw on op.events, in commit order.
    # (notify.* events are another part of the contract, checked elsewhere)
    def closed_and_paid() -> list | None:
        keys = [k for k, _ in stack.tap.of(tid)]
        return keys if {"ticket.closed", "ledger.refund_deducted"} <= set(keys) else None
    wait_for(closed_and_paid, 15, "ticket.closed and ledger.refund_deducted on op.events",
             on_timeout=lambda: f"seen: {[k for k, _ in stack.tap.of(tid)]}\n{stack.logs()}")
    events = [(k, b) for k, b in stack.tap.of(tid) if not k.startswith("notify.")]
    keys = [k for k, _ in events]
    # The refund is deducted in the judgment's transaction, so it follows ticket.stage4 and precedes closing.
    assert keys == ["ticket.negotiating", "ticket.awaiting_takeover", "ticket.stage1", "ticket.awaiting_evidence",
                    "ticket.stage2", "ticket.stage3", "ticket.stage4", "ledger.refund_deducted",
                    "ticket.closed"], keys
    ticket_events = [b for k, b in events if k.startswith("ticket.")]
    versions = [b["version"] for b in ticket_events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions
    assert ticket_events[0]["from_state"] is None and ticket_events[0]["to_state"] == "negotiating"
    for previous, current in zip(ticket_events, ticket_events[1:]):
        assert current["from_state"] == previous["to_state"], (previous, current)
    for key, b in events:
        assert b["ticket_id"] == tid and b["source"] == body["source"] and b["external_ref"] == body["external_ref"]
        assert b["event_id"] and b["at"]
        if key.startswith("ticket."):
            assert key == f"ticket.{b['to_state']}"
            assert set(b) >= {"event_id", "ticket_id", "source", "external_ref", "from_state", "to_state", "actor",
                              "action", "at", "data"}
    assert len({b["event_id"] for _, b in events}) == len(events)
    ledger = next(b for k, b in events if k == "ledger.refund_deducted")
    assert ledger["amount"] == body["claimed_amount"] and ledger["idempotency_key"]
    assert isinstance(ledger["amount"], int)
    judged = next(b for k, b in events if k == "ticket.stage4")
    assert ledger["idempotency_key"] == f"refund_deducted:{tid}:{judged['version']}"
    assert (ledger["merchant_id"], ledger["user_id"], ledger["currency"]) == (body["merchant_id"], body["user_id"],
                                                                            "CNY")
    # And the books: deducted from the merchant's reported balance, paid to the buyer once
    from models import ledger as books
    with stack.app.db.connection_context():
        assert books.check_invariants() == []
        assert books.merchant_funds(body["merchant_id"], "CNY") == 50_000 - body["claimed_amount"]
        assert books.paid_to_buyer(tid) == body["claimed_amount"]
    stack.assert_alive()


@pytest.mark.deadlines(merchant_response="1h")
def test_intake_deduplicates_rejects_what_it_cannot_apply_and_keeps_consuming(stack: Stack) -> None:
    stack.start_intake()
    (s1,) = stack.add_agents(("e2e-reader", 1))

    # The same complaint three times: twice with one message_id, then with another.
    original = complaint_body()
    first = stack.publish("complaint.submitted", original)
    stack.publish("complaint.submitted", original, message_id=first)
    stack.publish("complaint.submitted", original, message_id=uuid.uuid4().hex)

    bad = {
        "not-utf8": stack.publish("complaint.submitted", b"\xff\xfe{ this is not json"),
        "not-json": stack.publish("complaint.submitted", b"{this is not json either"),
        "wrong-shape": stack.publish("complaint.submitted", {"schema_version": 1, "source": "e2e-shop",
                                                             "order": "not an object"}),
        "unknown-ticket": stack.publish("evidence.submitted", {
            "schema_version": 1, "ticket_id": 987654321, "party": "user",
            "items": [{"kind": "photo", "uri": "https://files.example.com/e2e/x.jpg"}]}),
        # The ticket is negotiating: a buyer's confirmation is not an action of that state.
        "not-allowed": stack.publish("customer.confirmed", {
            "schema_version": 1, "source": original["source"], "external_ref": original["external_ref"],
            "user_id": original["user_id"], "accept": True}),
    }
    # Published after all of them: the intake must still be consuming.
    later = complaint_body()
    stack.publish("complaint.submitted", later)

    later_ticket = stack.find_ticket(later["source"], later["external_ref"], s1)
    assert later_ticket["state"] == "negotiating"
    stack.assert_alive()

    rows = stack.api("GET", f"/tickets?source={original['source']}&external_ref={original['external_ref']}", s1,
                     expect=200)[1]
    assert len(rows) == 1 and rows[0]["state"] == "negotiating", rows
    assert rows[0]["version"] == 1, "a repeat of the complaint changed the ticket"
    every = stack.api("GET", f"/tickets?source={original['source']}", s1, expect=200)[1]
    assert sorted(r["external_ref"] for r in every) == sorted([original["external_ref"], later["external_ref"]])

    listing = stack.cli("intake", "rejected").stdout
    lines = {line.split("\t")[3]: line.split("\t") for line in listing.splitlines() if line.count("\t") >= 6}
    for what, message_id in bad.items():
        assert message_id in lines, f"{what} ({message_id}) is not listed as rejected:\n{listing}"
        _id, _at, routing_key, _mid, status, reasons, _preview = lines[message_id][:7]
        assert status == "rejected", lines[message_id]
        assert reasons not in ("", "{}", "null"), f"{what} was rejected without a reason: {lines[message_id]}"
    assert len(lines) == len(bad), f"more rejected than expected (a duplicate or a valid message?):\n{listing}"
    assert "ticket" in lines[bad["unknown-ticket"]][5]
    assert lines[bad["not-allowed"]][2] == "customer.confirmed"
    assert "negotiating" in lines[bad["not-allowed"]][5]
