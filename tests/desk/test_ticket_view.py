"""`ticket_json` without Flask (the CLI reuses it): SLA promises, breaches, whose move it is."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from models.views.floor import open_breaches
from models.views.sla import ticket_sla
from models.views.ticket import ticket_json, waiting_on
from disputes.wiring import App
from models.ticket import Ticket

from .conftest import Caller, act, new_ticket


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
