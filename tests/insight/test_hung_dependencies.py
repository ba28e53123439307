"""Proof across a network (issue 18): ``/health`` and ``/metrics`` answer within their deadlines when
the database or the broker hangs — accepts connections and never answers, or a connection goes
half-open — naming what did not answer; an outage is logged once, and its end once.

A hung server is a `tests.network.Link`: a black hole (no server behind it) for what needs no real
server, or a relay in front of the real PostgreSQL or Redis that the test hangs, cuts and restores.
The app is the tests' own, with the hung dependency swapped in through the composition root
(`connect_database`, `make_broker`); nothing in the product is patched.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator

import dramatiq
import flask
import peewee
import pytest
from prometheus_client.parser import text_string_to_metric_families

from desk import create_api
from desk.metrics import DATABASE_READ_TIMEOUT
from disputes.probes import PROBE_TIMEOUT
from disputes.wiring import App, connect_database, make_broker
from models.base import database
from models.sending import enqueue_many
from tests.integration.conftest import need
from tests.network import Link

#: Slack for a loaded test machine on top of a deadline.
SLACK = 1.0


def get(app: App, path: str) -> tuple[flask.Response, float]:
    """`path` of the API of `app`, and how long it took to answer."""
    started = time.monotonic()
    response = create_api(app).test_client().get(path)
    return response, time.monotonic() - started


def samples(response: flask.Response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def up(values: dict, dependency: str) -> float:
    return values[("disputes_dependency_up", (("dependency", dependency),))]


def outage_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


@pytest.fixture
def hung_broker(app: App) -> Iterator[App]:
    """The app with its broker on a Redis address that accepts connections and never answers."""
    with Link() as hole:
        broker = make_broker(f"redis://127.0.0.1:{hole.port}/14")
        try:
            yield dataclasses.replace(app, broker=broker)
        finally:
            broker.close()


@pytest.fixture
def hung_database(app: App) -> Iterator[App]:
    """The app with its database on a PostgreSQL address that accepts connections and never answers
    (no server needed: the client waits for the server's first word)."""
    with Link() as hole:
        db = connect_database(f"postgresql://root@127.0.0.1:{hole.port}/test")
        try:
            yield dataclasses.replace(app, db=db)
        finally:
            database.initialize(app.db)  # the models' handle back on the app's own database


# ---- /health --------------------------------------------------------------------------------------

def test_health_names_a_hung_broker_within_its_deadline(hung_broker: App) -> None:
    response, took = get(hung_broker, "/health")
    assert took < PROBE_TIMEOUT + SLACK
    body = response.get_json()
    assert (response.status_code, body["status"], body["database"], body["broker"]) == (503, "down", "ok", "down")
    assert body["error"]["fields"] == {"broker": [f"TimeoutError: no answer within {PROBE_TIMEOUT:g}s"]}


def test_health_names_a_hung_database_within_its_deadline(hung_database: App) -> None:
    response, took = get(hung_database, "/health")
    assert took < PROBE_TIMEOUT + SLACK
    body = response.get_json()
    assert (response.status_code, body["database"], body["broker"]) == (503, "down", "ok")
    assert body["error"]["fields"] == {"database": [f"TimeoutError: no answer within {PROBE_TIMEOUT:g}s"]}
    assert "database" in body["error"]["message"]


def test_health_asks_both_at_once_so_two_hung_dependencies_cost_one_deadline(hung_database: App) -> None:
    with Link() as hole:
        broker = make_broker(f"redis://127.0.0.1:{hole.port}/14")
        try:
            response, took = get(dataclasses.replace(hung_database, broker=broker), "/health")
        finally:
            broker.close()
    assert took < PROBE_TIMEOUT + SLACK  # one after the other would take twice PROBE_TIMEOUT
    assert set(response.get_json()["error"]["fields"]) == {"database", "broker"}


def test_a_hung_broker_is_asked_once_and_logged_once_however_often_health_is_asked(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    """Each request waits on the ping still under way rather than starting another: a hung broker
    holds one connection and one thread, not one per request; and says so once in the log."""
    with Link() as hole:
        broker = make_broker(f"redis://127.0.0.1:{hole.port}/14")
        try:
            for _ in range(3):
                response, took = get(dataclasses.replace(app, broker=broker), "/health")
                assert (response.status_code, took < PROBE_TIMEOUT + SLACK) == (503, True)
            assert hole.accepted == 1
        finally:
            broker.close()
    assert outage_lines(caplog, "disputes.probes") == [
        f"broker unreachable: TimeoutError: no answer within {PROBE_TIMEOUT:g}s"]


# ---- /metrics -------------------------------------------------------------------------------------

def test_metrics_answer_within_the_deadline_when_the_broker_hangs(hung_broker: App) -> None:
    """What the database knows is all there; each queue's depth is estimated from its undone
    dispatches, marked as not read from the broker."""
    response, took = get(hung_broker, "/metrics")
    assert took < PROBE_TIMEOUT + SLACK
    values = samples(response)
    assert (response.status_code, up(values, "broker"), up(values, "database")) == (200, 0, 1)
    assert values[("disputes_queue_depth_from_broker", (("queue", "stage1"),))] == 0
    assert values[("disputes_queue_depth", (("queue", "stage1"),))] == 0
    assert ("disputes_tickets", (("state", "stage1"),)) in values


def test_metrics_answer_within_the_deadline_when_the_database_hangs(hung_database: App) -> None:
    """The broker's queue depths are all there; nothing read from the database is (rather than zeros)."""
    response, took = get(hung_database, "/metrics")
    assert took < DATABASE_READ_TIMEOUT + SLACK
    values = samples(response)
    assert (response.status_code, up(values, "database"), up(values, "broker")) == (200, 0, 1)
    assert values[("disputes_queue_depth_from_broker", (("queue", "stage2"),))] == 1
    assert not [name for name, _ in values if name.startswith(("disputes_tickets", "disputes_dispatch_backlog"))]


# ---- across a network, on the real servers --------------------------------------------------------

@pytest.mark.servers
def test_a_half_open_database_connection_is_named_within_the_deadline_and_its_end_logged_once(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL behind a link that stops carrying anything, on the pooled connection as on new ones:
    503 naming the database within the deadline, then 200 without a restart once the link carries
    again; the log says it once, and its end once."""
    need(5432, "PostgreSQL")
    with Link(5432) as link:
        db = connect_database(f"postgresql://root@127.0.0.1:{link.port}/test")
        hung = dataclasses.replace(app, db=db)
        try:
            assert get(hung, "/health")[0].status_code == 200  # a pooled connection through the link
            link.hang()
            for _ in range(2):
                response, took = get(hung, "/health")
                assert (response.status_code, response.get_json()["database"]) == (503, "down")
                assert took < PROBE_TIMEOUT + SLACK
            link.restore()
            assert answers_again(hung, "/health"), "/health did not recover once the link carried again"
        finally:
            db.close_all()
            database.initialize(app.db)
    lines = outage_lines(caplog, "disputes.probes")
    assert lines[0] == f"database unreachable: TimeoutError: no answer within {PROBE_TIMEOUT:g}s"
    assert lines[1].startswith("database reachable again after 2 failures over ") and len(lines) == 2


def answers_again(app: App, path: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if get(app, path)[0].status_code == 200:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.servers
def test_a_broker_outage_is_logged_once_however_many_sends_fail_and_its_end_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis behind a link that is cut: every send fails (the scheduler's relay tried five times a
    second), one line says so; the first send after the link is back says how long it lasted."""
    need(6379, "Redis")
    message = dramatiq.Message(queue_name="stage1", actor_name="stage1_handle", args=(0,), kwargs={}, options={})
    with Link(6379) as link:
        broker = make_broker(f"redis://127.0.0.1:{link.port}/14", redis_namespace=f"outage-{uuid.uuid4().hex[:8]}")
        try:
            assert enqueue_many(broker, [message]) == 1
            link.refuse()
            assert [enqueue_many(broker, [message]) for _ in range(25)] == [0] * 25
            link.restore()
            assert enqueue_many(broker, [message, message]) == 2
        finally:
            broker.flush_all()
            broker.close()
    lines = outage_lines(caplog, "disputes.dispatch")
    assert len(lines) == 2, lines
    assert lines[0].startswith("broker unreachable: ConnectionError: ")
    assert lines[1].startswith("broker reachable again after 25 failures over ")
    first = next(r for r in caplog.records if r.name == "disputes.dispatch")
    assert (first.levelno, first.dependency, first.exc_info is not None) == (logging.WARNING, "broker", True)


def test_every_postgresql_and_redis_connection_the_wiring_makes_gives_up_on_a_silent_server(app: App) -> None:
    """What makes the workers recover from hung servers and half-open connections too, not only
    the probes: connect timeouts, TCP keepalives, a read timeout (Redis), a health check of idle
    connections (Redis)."""
    db = connect_database("postgresql://root@127.0.0.1:1/test")
    try:
        assert isinstance(db, peewee.PostgresqlDatabase)
        assert {"connect_timeout", "keepalives", "keepalives_idle", "tcp_user_timeout"} <= set(db.connect_params)
    finally:
        database.initialize(app.db)
    broker = make_broker("redis://127.0.0.1:1/14")
    try:
        kwargs = broker.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["health_check_interval"]) == (5, 3, 30)
    finally:
        broker.close()
