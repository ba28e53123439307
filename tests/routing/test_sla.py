"""SLA promises on the working-day calendar: pinned at the floor, paused while hidden, warned, breached."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from policy import Policy, policy_from_dict
from models.change import Actor, Role
from models.outbox import OutboxEvent
from models.sla import SlaEvent
from models.ticket import Ticket
from models.workflow import apply, open_ticket
from scheduler.sla import watch_slas
from tests.conftest import fast_policy_dict

UTC = timezone.utc
#: Friday 4 December 2026, 17:00 in Shanghai; Monday 7 December is a configured holiday.
FRIDAY_5PM = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
#: 3 working days later: Tue 8, Wed 9, Thu 10 — Thursday 17:00 Shanghai.
RESOLVE_DUE = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
STATUS = {"dispute_status": "not_reconciled", "category": "apparel"}


@pytest.fixture
def policy() -> Policy:
    return policy_from_dict(fast_policy_dict(
        calendar={"zone": "Asia/Shanghai", "holidays": ["2026-12-07"], "extra_working_days": []},
        sla={"accept": "1h", "first_feedback": "24h", "resolve_simple": "3wd", "resolve_complex": "7wd",
             "warn_at": [50, 75, 90]}))


def on_the_floor(policy: Policy, at: datetime, ref: str = "S1") -> int:
    fields = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=10_000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=5_000, occurred_at=at)
    return open_ticket(fields, {"negotiation": "failed"}, policy, now=at).ticket.id  # type: ignore[union-attr]


def in_judgment(policy: Policy, at: datetime, ref: str = "S1") -> int:
    """Taken over and fed back at once, so only the resolve promise stays open."""
    ticket_id = on_the_floor(policy, at, ref)
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy, now=at + timedelta(minutes=1))
    apply(ticket_id, "to_judgment", Actor.agent(1, 1), STATUS, policy, now=at + timedelta(minutes=2))
    return ticket_id


def breaches(ticket_id: int) -> list[str]:
    return [e.promise for e in SlaEvent.select().where((SlaEvent.ticket_id == ticket_id) & (SlaEvent.kind == "breach"))]


def test_the_resolve_promise_crosses_the_weekend_and_the_holiday(app, policy) -> None:
    ticket_id = on_the_floor(policy, FRIDAY_5PM)
    assert Ticket.get_by_id(ticket_id).sla_resolve_due == RESOLVE_DUE


def test_a_breach_on_the_working_day_calendar_is_detected_at_the_right_minute(app, policy) -> None:
    # Given a ticket that reached the floor on Friday at 17:00, in judgment since
    ticket_id = in_judgment(policy, FRIDAY_5PM)
    # When the watcher looks one minute before Thursday 17:00: warnings, but no breach
    watch_slas(policy, RESOLVE_DUE - timedelta(minutes=1))
    assert breaches(ticket_id) == []
    levels = [e.level for e in SlaEvent.select().where((SlaEvent.ticket_id == ticket_id) & (SlaEvent.kind == "warning"))
              .order_by(SlaEvent.level)]
    assert levels == [50, 75, 90]
    # Then at 17:00 the breach is logged once, the priority rises, and downstream hears of it
    watch_slas(policy, RESOLVE_DUE)
    watch_slas(policy, RESOLVE_DUE + timedelta(minutes=5))
    assert breaches(ticket_id) == ["resolve"]
    assert Ticket.get_by_id(ticket_id).priority == 1
    published = [e.body for e in OutboxEvent.select().where(OutboxEvent.routing_key == "sla.breached")]
    assert [(b["ticket_id"], b["promise"], b["due_at"]) for b in published] == [
        (ticket_id, "resolve", RESOLVE_DUE.isoformat())]


def test_the_takeover_and_first_feedback_promises_are_logged_as_hits(app, policy) -> None:
    ticket_id = in_judgment(policy, FRIDAY_5PM)
    hits = {e.promise for e in SlaEvent.select().where((SlaEvent.ticket_id == ticket_id) & (SlaEvent.kind == "hit"))}
    assert hits == {"accept", "first_feedback"}


def test_a_takeover_after_the_promise_is_logged_late_and_the_breach_was_caught_before(app, policy) -> None:
    ticket_id = on_the_floor(policy, FRIDAY_5PM)
    watch_slas(policy, FRIDAY_5PM + timedelta(hours=1, minutes=1))
    assert breaches(ticket_id) == ["accept"]
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy, now=FRIDAY_5PM + timedelta(hours=2))
    kinds = {(e.promise, e.kind) for e in SlaEvent.select().where(SlaEvent.ticket_id == ticket_id)}
    assert ("accept", "late") in kinds


def test_the_clock_stops_while_the_ticket_waits_on_a_party(app, policy) -> None:
    # Given a ticket whose agent asked for evidence one minute after takeover
    ticket_id = on_the_floor(policy, FRIDAY_5PM)
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy, now=FRIDAY_5PM)
    asked = FRIDAY_5PM + timedelta(minutes=1)
    apply(ticket_id, "request_evidence", Actor.agent(1, 1), {**STATUS, "from": "user", "items": ["photo"]},
          policy, now=asked)
    # When the buyer answers ten hours later
    apply(ticket_id, "submit_evidence", Actor(Role.USER), {"party": "user", "items": []}, policy,
          now=asked + timedelta(hours=10))
    # Then ten hours of stopped time are recorded and the resolve promise moved back by them
    ticket = Ticket.get_by_id(ticket_id)
    assert ticket.state == "stage2"
    assert ticket.sla_paused_seconds == pytest.approx(36_000)
    assert ticket.sla_resolve_due == RESOLVE_DUE + timedelta(hours=10)
    # And nothing was watched while it waited
    watch_slas(policy, asked + timedelta(hours=9))
    assert breaches(ticket_id) == []


def test_a_later_policy_change_does_not_move_a_pinned_promise(app, policy) -> None:
    ticket_id = in_judgment(policy, FRIDAY_5PM)
    stricter = policy_from_dict(fast_policy_dict(sla={"accept": "1h", "first_feedback": "24h",
                                                      "resolve_simple": "1wd", "resolve_complex": "2wd",
                                                      "warn_at": [50]}))
    watch_slas(stricter, RESOLVE_DUE - timedelta(hours=1))
    assert breaches(ticket_id) == []
    assert Ticket.get_by_id(ticket_id).sla_resolve_due == RESOLVE_DUE
