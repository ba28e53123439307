"""`ticket_json` without Flask (the CLI reuses it): SLA promises, breaches, whose move it is."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone


from models.views.floor import open_breaches
from models.views.sla import ticket_sla
from models.views.ticket import ticket_json, waiting_on
from disputes.wiring import App
from models.approval import Approval
from models.audit import TicketEvent
from models.evidence import EvidenceItem, EvidenceRequest
from models.ticket import LinkedComplaint
from models.timer import PENDING, Timer


from .conftest import Caller, act, add_agent, new_ticket
from tests.statements import Statements


def test_a_ticket_still_awaiting_takeover_past_the_hour_breaches_accept(app: App) -> None:
    ticket = new_ticket(app)
    two_hours_later = datetime.now(timezone.utc) + timedelta(hours=2)
    sla = ticket_sla(ticket, app.policy, two_hours_later)
    assert "accept" in sla.breaches
    assert sla.accept_due == ticket.floor_at + timedelta(hours=1)
    assert open_breaches(app.policy, two_hours_later)["accept"] == 1
    assert open_breaches(app.policy, datetime.now(timezone.utc))["accept"] == 0


def test_a_timely_takeover_keeps_the_accept_promise(app: App, agents: dict[str, Caller]) -> None:
    ticket = act(app, new_ticket(app), "take_over", agents["s1a"])
    sla = ticket_sla(ticket, app.policy, datetime.now(timezone.utc) + timedelta(hours=5))
    assert "accept" not in sla.breaches
    assert sla.accepted_at is not None


def test_an_open_ticket_past_its_resolve_promise_breaches_resolve(app: App, agents: dict[str, Caller]) -> None:
    ticket = act(app, new_ticket(app), "take_over", agents["s1a"])
    a_month_later = datetime.now(timezone.utc) + timedelta(days=30)
    sla = ticket_sla(ticket, app.policy, a_month_later)
    assert "resolve" in sla.breaches
    assert sla.resolve_due is not None and sla.resolve_due < a_month_later


def test_complex_disputes_get_the_longer_promise(app: App) -> None:
    simple, complex_ = new_ticket(app), new_ticket(app, complexity="complex")
    now = datetime.now(timezone.utc)
    assert ticket_sla(complex_, app.policy, now).resolve_due > ticket_sla(simple, app.policy, now).resolve_due


def test_a_ticket_settled_in_negotiation_made_no_floor_promise(app: App) -> None:
    ticket = new_ticket(app, negotiation="pending")
    body = ticket_json(ticket, None, app.policy, datetime.now(timezone.utc))
    assert body["sla"]["accept_due"] is None and body["sla"]["breaches"] == []
    assert body["waiting_on"] == "merchant"
    assert body["due_at"] is not None  # the merchant's response deadline
    assert body["allowed_actions"] == []


def test_ticket_json_is_plain_json(app: App, agents: dict[str, Caller]) -> None:
    import json
    ticket = act(app, new_ticket(app), "take_over", agents["s1a"])
    body = ticket_json(ticket, agents["s1a"].agent, app.policy, datetime.now(timezone.utc))
    assert json.loads(json.dumps(body)) == body
    assert body["allowed_actions"] == ["request_evidence", "to_judgment"]


def test_waiting_on_follows_the_state_table(app: App, agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    assert waiting_on(ticket) == ["stage1"]
    ticket = act(app, ticket, "take_over", agents["s1a"])
    ticket = act(app, ticket, "to_judgment", agents["s1a"], {"dispute_status": "not_reconciled",
                                                             "category": "apparel"})
    assert waiting_on(ticket) == ["stage3"]



def test_everything_beside_the_ticket_is_one_statement_in_order(db_app: App) -> None:
    app = db_app
    agents = {name: add_agent(name, int(name[1])) for name in ("s1a", "s4a")}
    ticket = act(app, new_ticket(app), "take_over", agents["s1a"])
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    hour = timedelta(hours=1)
    for round_, party in ((2, "user"), (1, "merchant"), (1, "user")):  # shown by round, then as written
        EvidenceRequest.create(ticket=ticket.id, round=round_, party=party, kinds=["photo", "video"],
                               due_at=t0 + round_ * hour, fulfilled_at=t0 if party == "merchant" else None)
    for n in (1, 2):
        EvidenceItem.create(ticket=ticket.id, round=1, party="user", kind="photo", uri=f"https://f/{n}.jpg",
                            sha256=None if n == 1 else "ab" * 32, note="说明" if n == 2 else None,
                            submitted_at=t0 + n * hour)
        LinkedComplaint.create(ticket=ticket.id, source="shop", external_ref=f"linked-{ticket.id}-{n}",
                               dispute_type="quality", claimed_amount=100 * n, linked_at=t0 + n * hour)
    Approval.create(ticket_id=ticket.id, kind="complaint_fee", amount=1, currency="CNY", requested_by=1,
                    decision="declined")
    for amount in (2, 3):  # the newest pending one is shown
        Approval.create(ticket_id=ticket.id, kind="platform_advance", amount=amount, currency="CNY",
                        requested_by=agents["s4a"].agent.id, requested_at=t0 + amount * hour)
    for due, state, status in ((t0 + 9 * hour, ticket.state, PENDING), (t0 + 5 * hour, ticket.state, PENDING),
                               (t0 + hour, ticket.state, "cancelled"), (t0, "awaiting_takeover", PENDING)):
        Timer.create(ticket_id=ticket.id, action="lease_expired", state=state, state_version=ticket.state_version,
                     queue="stage1", due_at=due, status=status)
    TicketEvent.create(ticket=ticket.id, version=ticket.version + 10, to_state=ticket.state, actor="system",
                       action="take_over", at=t0)  # not an agent's: no milestone

    with Statements() as read:
        body = ticket_json(ticket, agents["s1a"].agent, app.policy, datetime.now(timezone.utc))
    assert len(read.sql) == 1, read.sql

    assert [(r["round"], r["party"], r["fulfilled_at"]) for r in body["evidence_requests"]] == [
        (1, "merchant", t0.isoformat()), (1, "user", None), (2, "user", None)]
    assert body["evidence_requests"][0] == {"round": 1, "party": "merchant", "kinds": ["photo", "video"],
                                            "due_at": (t0 + hour).isoformat(), "fulfilled_at": t0.isoformat()}
    assert body["evidence"] == [
        {"party": "user", "round": 1, "kind": "photo", "uri": "https://f/1.jpg", "sha256": None, "note": None,
         "submitted_at": (t0 + hour).isoformat()},
        {"party": "user", "round": 1, "kind": "photo", "uri": "https://f/2.jpg", "sha256": "ab" * 32,
         "note": "说明", "submitted_at": (t0 + 2 * hour).isoformat()}]
    assert body["linked_complaints"] == [
        {"source": "shop", "external_ref": f"linked-{ticket.id}-{n}", "dispute_type": "quality",
         "claimed_amount": 100 * n, "linked_at": (t0 + n * hour).isoformat()} for n in (1, 2)]
    assert body["payment"]["pending_approval"] == {"kind": "platform_advance", "amount": 3, "currency": "CNY",
                                                   "requested_by": agents["s4a"].agent.id,
                                                   "requested_at": (t0 + 3 * hour).isoformat()}
    assert body["due_at"] == (t0 + 5 * hour).isoformat()  # the earliest pending timer of this state
    takeover = TicketEvent.get((TicketEvent.ticket == ticket.id) & (TicketEvent.action == "take_over")
                               & TicketEvent.actor.startswith("agent:"))
    assert body["sla"]["accepted_at"] == takeover.at.isoformat()
