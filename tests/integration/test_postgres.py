"""The core on PostgreSQL: the same transitions, and two schedulers that never double-fire."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from models.base import database, utcnow
from models.change import Actor, Role
from models.outbox import Dispatch
from models.ticket import Ticket
from models.timer import FIRED, Timer
from models.workflow import VersionConflict, apply, open_ticket
from scheduler.loop import Scheduler
from tests.conftest import fund_merchant
from tests.integration.conftest import make_app

pytestmark = pytest.mark.servers


def complaint_fields(i: int) -> dict:
    return dict(source="shop", external_ref=f"PG-{i}", channel="app", user_id=f"u{i}", merchant_id=f"m{i}",
                order_id=f"O-{i}", order_amount=10_000, currency="CNY", category="apparel", delivery="platform",
                order_status="delivered", dispute_type="quality", claimed_amount=5_000, occurred_at=utcnow())


def test_a_ticket_moves_through_the_floor_on_postgresql(pg_url, fast_policy) -> None:
    app = make_app(pg_url, fast_policy)
    with app.db.connection_context():
        fund_merchant("m1")  # the merchant's funds cover the refund: it is deducted at judgment
        t = open_ticket(complaint_fields(1), {"negotiation": "failed"}, fast_policy).ticket
        apply(t.id, "take_over", Actor.agent(1, 11), {}, fast_policy)
        apply(t.id, "to_judgment", Actor.agent(1, 11), {"dispute_status": "not_reconciled", "category": "apparel"},
              fast_policy)
        apply(t.id, "judge", Actor.agent(3, 33), {"liability": "merchant", "remedy": "full_refund"}, fast_policy)
        apply(t.id, "verify_refund", Actor.agent(4, 44), {}, fast_policy)
        ticket = Ticket.get_by_id(t.id)
        assert (ticket.state, ticket.version, ticket.refund_amount) == ("closed", 5, 5_000)


def test_an_agent_with_a_stale_version_is_refused_on_postgresql(pg_url, fast_policy) -> None:
    app = make_app(pg_url, fast_policy)
    with app.db.connection_context():
        t = open_ticket(complaint_fields(2), {"negotiation": "failed"}, fast_policy).ticket
        apply(t.id, "take_over", Actor.agent(1, 11), {}, fast_policy)
        with pytest.raises(VersionConflict):
            apply(t.id, "to_judgment", Actor.agent(1, 11), {"dispute_status": "x", "category": "y"}, fast_policy,
                  expected_version=1)
        assert Ticket.get_by_id(t.id).state == "stage1"


def test_two_schedulers_fire_each_due_timer_exactly_once(pg_url, fast_policy) -> None:
    app = make_app(pg_url, fast_policy)
    with app.db.connection_context():
        ids = [open_ticket(complaint_fields(100 + i), {"negotiation": "pending"}, fast_policy).ticket.id
               for i in range(200)]
        Timer.update(due_at=utcnow() - timedelta(seconds=1)).execute()
    schedulers = [Scheduler(app), Scheduler(app)]
    errors: list[BaseException] = []

    def beat(s: Scheduler) -> None:
        try:
            for _ in range(20):
                s.tick()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=beat, args=(s,)) for s in schedulers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    with database.connection_context():
        assert Timer.select().where(Timer.status == FIRED).count() == len(ids)
        wakes = [d.payload["timer_id"] for d in Dispatch.select().where(Dispatch.kind == "wake")]
        assert len(wakes) == len(set(wakes)) == len(ids)
