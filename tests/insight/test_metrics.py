"""`GET /metrics`: Prometheus text that prometheus-client's own parser reads, with every family an SRE
scales and alerts on, its values taken from the database and the broker."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Callable

import pika
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from desk import create_api
from models.views.tallies import audit_tally
from desk.metrics import FloorCollector, Tallies, render_metrics
from disputes.probes import queue_depths
from models.views.floor import breach_cutoff
from policy import default_policy_dict, policy_from_dict
from disputes.wiring import App
from models.agent import Agent
from models.audit import TicketEvent
from models.change import Actor, Role
from models.sla import SlaEvent
from models.ticket import Ticket
from models.workflow import apply
from models.sending import send_dispatches
from workers.intake import Admission

#: Every family issue 9 asks for (counters without their ``_total``, as the parser names them).
FAMILIES = {
    "disputes_queue_depth": "gauge", "disputes_tickets": "gauge", "disputes_transitions": "counter",
    "disputes_stage_latency_seconds": "histogram", "disputes_timers_pending": "gauge",
    "disputes_timer_lag_seconds": "gauge", "disputes_sla_breaches_open": "gauge", "disputes_sla_breaches": "counter",
    "disputes_intake_rejected": "counter", "disputes_intake_rejected_waiting": "gauge",
    "disputes_outbox_backlog": "gauge", "disputes_dispatch_backlog": "gauge",
    "disputes_dispatch_backlog_by_queue": "gauge", "disputes_state_wait_seconds_max": "gauge",
}


def sample(families: dict, name: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"{name} {labels}")


def scrape(app: App) -> dict:
    return {f.name: f for f in text_string_to_metric_families(render_metrics(app).decode("utf-8"))}


@pytest.fixture
def policy(make_policy):
    """Push routing: a ticket's arrival at a stage is a message on its queue for the router (under
    pull routing, agents claim from the table and no message is sent), so queues have depth."""
    return make_policy(routing={"mode": "push"})


@pytest.fixture
def floor_scene(app: App, publish: Callable[..., Admission], complaint: Callable[..., dict], clock) -> App:
    """Three complaints straight to the floor (their stage-1 messages left on the broker), one of
    them taken over and sent to judgment; one complaint still negotiating, its merchant deadline
    10 s overdue; a message the intake refused; the accept promise of a waiting ticket broken."""
    agent = Agent.create(name="s1", stage=1, token_hash="h1")
    ids = [publish("complaint.submitted", complaint(negotiation="failed")).ticket_id for _ in range(3)]
    publish("complaint.submitted", complaint())
    for action, params in (("take_over", {}), ("to_judgment", {"dispute_status": "not_reconciled",
                                                                 "category": "apparel"})):
        send_dispatches(app.broker, apply(ids[0], action, Actor.agent(1, agent.id), params, app.policy).dispatches)
    publish("complaint.submitted", b"\xff not json")
    Ticket.update(sla_accept_due=app.clock() - timedelta(hours=1)).where(Ticket.id == ids[1]).execute()
    SlaEvent.create(ticket_id=ids[1], promise="accept", kind="breach", due_at=app.clock() - timedelta(hours=1))
    clock.advance(10)
    return app


def test_metrics_parse_with_prometheus_clients_parser_and_hold_every_family(floor_scene: App) -> None:
    families = scrape(floor_scene)
    assert {name: families[name].type for name in FAMILIES} == FAMILIES
    assert all(name.startswith("disputes_") for name in families)


def test_queue_depth_per_stage_queue_is_read_from_the_broker(floor_scene: App) -> None:
    families = scrape(floor_scene)
    assert sample(families, "disputes_queue_depth", queue="stage1") == 4  # 3 arrivals + 1 takeover, not consumed
    assert sample(families, "disputes_queue_depth", queue="stage3") == 1
    assert sample(families, "disputes_queue_depth_from_broker", queue="stage2") == 1
    assert sample(families, "disputes_dispatch_backlog") == 5


def test_tickets_per_state_transitions_and_stage_latency_come_from_the_tickets_and_the_audit_trail(
        floor_scene: App) -> None:
    families = scrape(floor_scene)
    assert sample(families, "disputes_tickets", state="awaiting_takeover") == 2
    assert sample(families, "disputes_tickets", state="stage3") == 1
    assert sample(families, "disputes_tickets", state="negotiating") == 1
    assert sample(families, "disputes_transitions_total", action="submit") == 4
    assert sample(families, "disputes_transitions_total", action="take_over") == 1
    assert sample(families, "disputes_stage_latency_seconds_count", stage="stage1", state="stage1") == 1
    assert sample(families, "disputes_stage_latency_seconds_bucket", state="awaiting_takeover", le="+Inf") == 1
    assert sample(families, "disputes_stage_latency_seconds_bucket", state="awaiting_takeover", le="1.0") == 1
    assert sample(families, "disputes_stage_latency_seconds_count", stage="stage2", state="stage2") == 0


def test_timers_sla_breaches_rejected_messages_and_the_outbox(floor_scene: App) -> None:
    families = scrape(floor_scene)
    assert sample(families, "disputes_timers_pending", queue="negotiation") == 1
    assert sample(families, "disputes_timers_due", queue="negotiation") == 1
    assert 8 <= sample(families, "disputes_timer_lag_seconds") <= 30  # due after 1 s, clock moved 10 s
    assert sample(families, "disputes_sla_breaches_open", sla="accept") == 1
    assert sample(families, "disputes_sla_breaches_open", sla="resolve") == 0
    assert sample(families, "disputes_sla_breaches_total", sla="accept") == 1
    assert sample(families, "disputes_intake_rejected_total") == 1
    assert sample(families, "disputes_intake_rejected_waiting") == 1
    assert sample(families, "disputes_outbox_backlog") >= 6  # every change, none relayed yet
    assert sample(families, "disputes_outbox_oldest_age_seconds") > 0


def test_the_route_serves_the_text_without_a_token(floor_scene: App) -> None:
    response = create_api(floor_scene).test_client().get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert set(FAMILIES) <= names


def test_the_audit_tally_folds_settled_rows_and_never_goes_down(floor_scene: App) -> None:
    now = [0.0]
    tally = audit_tally(settle=60, clock=lambda: now[0])
    first = tally.read()
    assert tally.watermark == 0 and first.by_action()["submit"] == 4
    now[0] = 61  # the rows seen at 0 are settled: folded, and no longer recounted
    assert tally.read().by_action() == first.by_action() and tally.watermark == TicketEvent.select().count()
    ticket_id = Ticket.select(Ticket.id).where(Ticket.state == "awaiting_takeover").scalar()
    apply(ticket_id, "withdraw", Actor(Role.USER), {}, floor_scene.policy)
    after = tally.read()
    assert after.by_action()["withdraw"] == 1 and after.by_action()["submit"] == 4
    assert after.in_state("withdrawn") == 1
    families = {f.name: f for f in text_string_to_metric_families(
        render_metrics_with(floor_scene, Tallies(audit=tally)).decode("utf-8"))}
    assert sample(families, "disputes_tickets", state="withdrawn") == 1  # a final state, from the tally


def render_metrics_with(app: App, tallies: Tallies) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FloorCollector(app, tallies))
    return generate_latest(registry)


class RedisBroker:
    """Looks like dramatiq's RedisBroker to `queue_depths`: a namespace and a client."""

    namespace = "dramatiq"

    def __init__(self, lengths: dict[str, int]) -> None:
        self.lengths, self.asked = lengths, []
        self.client = SimpleNamespace(pipeline=lambda transaction: self)

    def llen(self, key: str) -> None:
        self.asked.append(key)

    def execute(self) -> list[int]:
        return [self.lengths.get(key, 0) for key in self.asked]


def test_redis_queue_depth_is_the_length_of_dramatiqs_list() -> None:
    broker = RedisBroker({"dramatiq:stage2": 7})
    assert queue_depths(broker, ["stage1", "stage2"]) == {"stage1": 0, "stage2": 7}  # type: ignore[arg-type]
    assert broker.asked == ["dramatiq:stage1", "dramatiq:stage2"]


class RabbitmqBroker:
    parameters = [pika.ConnectionParameters(host="rabbit.invalid")]


def test_rabbitmq_queue_depth_is_a_passive_declares_message_count(monkeypatch: pytest.MonkeyPatch) -> None:
    declared: list[tuple[str, bool]] = []

    class Channel:
        def queue_declare(self, queue: str, passive: bool = False) -> SimpleNamespace:
            declared.append((queue, passive))
            if queue == "stage4":
                raise pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND")
            return SimpleNamespace(method=SimpleNamespace(message_count=12))

        def close(self) -> None:
            pass

    class Connection:
        def __init__(self, parameters: pika.ConnectionParameters) -> None:
            assert parameters.socket_timeout == 2.0 and parameters.connection_attempts == 1

        def channel(self) -> Channel:
            return Channel()

        def close(self) -> None:
            pass

    monkeypatch.setattr(pika, "BlockingConnection", Connection)
    assert queue_depths(RabbitmqBroker(), ["stage2", "stage4"]) == {"stage2": 12, "stage4": 0}  # type: ignore[arg-type]
    assert declared == [("stage2", True), ("stage4", True)]


def test_a_broker_that_cannot_say_falls_back_to_undone_dispatches(floor_scene: App,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(floor_scene, "broker", SimpleNamespace())
    families = scrape(floor_scene)
    assert sample(families, "disputes_queue_depth_from_broker", queue="stage1") == 0
    assert sample(families, "disputes_queue_depth", queue="stage1") == 4  # the undone dispatches


@pytest.mark.parametrize("promise", ["1h", "24h", "3wd", "7wd"])
def test_the_breach_cutoff_agrees_with_the_promise_due_time_on_the_working_calendar(promise: str) -> None:
    policy = policy_from_dict(default_policy_dict())
    duration = {"1h": policy.sla.accept, "24h": policy.sla.first_feedback, "3wd": policy.sla.resolve_simple,
                "7wd": policy.sla.resolve_complex}[promise]
    now = datetime(2026, 10, 9, 9, 30, tzinfo=timezone.utc)  # just after the National Day week
    cutoff = breach_cutoff(duration, policy.calendar, now)
    for minutes in range(0, 60 * 24 * 30, 97):
        floor = now - timedelta(minutes=minutes)
        late = duration.after(floor, policy.calendar) < now
        if abs((floor - cutoff).total_seconds()) > 2:
            assert late == (floor <= cutoff), (floor, cutoff)


def test_a_scrape_reads_json_free_rows_only(floor_scene: App) -> None:
    """The scrape never decodes ticket or audit JSON columns (cheap at any size)."""
    from models.base import JSONField
    decoded: list[str] = []
    original = JSONField.python_value

    def spy(self, value):  # type: ignore[no-untyped-def]
        decoded.append(self.name)
        return original(self, value)

    JSONField.python_value = spy  # type: ignore[method-assign]
    try:
        render_metrics(floor_scene)
    finally:
        JSONField.python_value = original  # type: ignore[method-assign]
    assert decoded == []
