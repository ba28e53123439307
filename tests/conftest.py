"""Shared fixtures: a whole app on a SQLite temp file and dramatiq's StubBroker, no servers.

Every test that asks for `app` gets a fresh database file and a fresh broker,
built through the one composition root (`disputes.wiring.build_app`) exactly as
production does, with every policy deadline shortened to one second so that
"after the deadline" is a short sleep or a nudge of `clock`.

    def test_something(app, worker, publish, complaint, drain):
        admission = publish("complaint.submitted", complaint(negotiation="failed"))  # send
        drain()                                                                      # join
        assert Ticket.get_by_id(admission.ticket_id).state == "awaiting_takeover"    # assert
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import dramatiq
import pytest
from dramatiq.middleware import Retries

import models
import workers
from policy import Policy, default_policy_dict, policy_from_dict
from disputes.settings import QUEUES, Settings
from disputes.wiring import App, build_app
from models.base import utcnow
from workers.intake import Admission, Intake
from tests.integration.conftest import fresh_pg_database
from tests.integration.conftest import make_app as make_pg_app

#: Every deadline of the contract, all shortened to one second for tests.
DEADLINES = ("merchant_response", "customer_confirmation", "interception", "evidence", "payment_voucher", "appeal")


def fast_policy_dict(**sections: dict) -> dict:
    """The default policy as a dict with every deadline at "1s"; `sections` merge over it."""
    data = default_policy_dict()
    data["deadlines"] = {name: "1s" for name in DEADLINES}  # type: ignore[index]
    for name, values in sections.items():
        current = data.get(name)
        data[name] = {**current, **values} if isinstance(current, dict) else values
    return data


class Clock:
    """The app's clock (`App.clock`, read by the scheduler): real time plus an offset tests move."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        """Pretend `seconds` passed — for the scheduler; the workflow stamps changes with real time."""
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def policy() -> Policy:
    """The default policy with every deadline "1s" (override this fixture to change sections)."""
    return policy_from_dict(fast_policy_dict())


@pytest.fixture
def make_policy() -> Callable[..., Policy]:
    """``make_policy(intake={"secrets": {...}}, ...)``: the fast policy with sections merged over it.
    Use it in a local override of `policy`."""
    def _make(**sections: dict) -> Policy:
        return policy_from_dict(fast_policy_dict(**sections))
    return _make


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(db_path: Path, policy: Policy, clock: Callable[[], datetime] | None = None) -> App:
    """An app on the SQLite file `db_path` with a StubBroker, schema created, actors declared.

    The broker's Retries middleware is set to no retries, so a handler that raises
    shows up at once in `drain` (``join(fail_fast=True)``) instead of after backoffs.
    """
    app = build_app(Settings(database_url=f"sqlite:///{db_path}"), policy=policy)
    if clock is not None:
        app.clock = clock
    for middleware in app.broker.middleware:
        if isinstance(middleware, Retries):
            middleware.max_retries = 0
    models.init_schema()
    workers.declare_all(app)
    return app


@pytest.fixture(scope="session")
def app_factory() -> Callable[..., App]:
    """``app_factory(db_path, policy=None)``: `make_app` for module-scoped apps (fast policy by default).
    The caller closes it (``app.db.close()``)."""
    def _factory(db_path: Path, policy: Policy | None = None) -> App:
        return make_app(db_path, policy or policy_from_dict(fast_policy_dict()))
    return _factory


@contextmanager
def running_app(db_dir: Path, name: str, policy: Policy, clock: Callable[[], datetime] | None = None,
                *, in_memory: bool = False) -> Iterator[App]:
    """An app on `db_dir/name` (or a RAM-backed directory with `in_memory`, for property tests that
    run thousands of small transactions), torn down after."""
    where = Path(tempfile.mkdtemp(dir="/dev/shm")) if in_memory and Path("/dev/shm").is_dir() else db_dir
    app = make_app(where / name, policy, clock)
    try:
        yield app
    finally:
        app.broker.flush_all()
        app.broker.close()
        app.db.close()
        if where != db_dir:
            shutil.rmtree(where, ignore_errors=True)


def wipe_database() -> None:
    """Empty every table but the schema version: a clean slate much faster than a new file."""
    from models.base import database
    from models.schema import ALL_MODELS, SchemaVersion
    with database.atomic():
        for model in reversed(ALL_MODELS):
            if model is not SchemaVersion:
                model.delete().execute()


@pytest.fixture
def app(tmp_path: Path, policy: Policy, clock: Clock) -> Iterator[App]:
    """A fresh app: its own database file, its own StubBroker, `clock` as its clock."""
    with running_app(tmp_path, "t.db", policy, clock) as app:
        yield app


@pytest.fixture
def worker(app: App) -> Iterator[dramatiq.Worker]:
    """A running dramatiq worker on the app's StubBroker (two threads)."""
    w = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=50)
    w.start()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def intake(app: App) -> Intake:
    return Intake(app)


_refs = itertools.count(1)


def complaint_body(**overrides: Any) -> dict:
    """A valid ``complaint.submitted`` body (SPEC §4); keyword arguments replace top-level keys,
    ``order={...}`` merges into the order."""
    n = next(_refs)
    body: dict[str, Any] = {
        "schema_version": 1, "source": "shop", "external_ref": f"C-{n}", "channel": "app",
        "order": {"order_id": f"O-{n}", "amount": 10000, "currency": "CNY", "category": "apparel",
                  "delivery": "platform", "status": "delivered"},
        "user_id": "u1", "merchant_id": "m1", "dispute_type": "quality", "claimed_amount": 5000,
        "description": "the seams came apart on first wash", "occurred_at": "2026-11-20T10:00:00+08:00",
    }
    order = overrides.pop("order", None)
    if order is not None:
        body["order"] = {**body["order"], **order}
    body.update(overrides)
    return body


@pytest.fixture
def complaint() -> Callable[..., dict]:
    """Factory of valid complaint bodies, each with its own external_ref and order_id."""
    return complaint_body


@pytest.fixture
def publish(intake: Intake) -> Callable[..., Admission]:
    """``publish(routing_key, body, message_id=None, headers=None)``: admit one message as the
    kombu consumer would (body as JSON bytes; a ``bytes`` body is sent as is)."""
    def _publish(routing_key: str, body: dict | bytes, message_id: str | None = None,
                 headers: dict | None = None) -> Admission:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        return intake.admit(routing_key, raw, message_id, headers)
    return _publish


def drain_app(app: App, worker: dramatiq.Worker, rounds: int = 50) -> None:
    """Join every stage queue until none has a message left (a handler may enqueue to another)."""
    broker = app.broker
    for _ in range(rounds):
        for queue in QUEUES:
            broker.join(queue, fail_fast=True, timeout=10_000)
        worker.join()
        if all(broker.queues[q].unfinished_tasks == 0 for q in QUEUES):
            return
    raise AssertionError("the queues did not drain")


@pytest.fixture
def drain(app: App, worker: dramatiq.Worker) -> Callable[..., None]:
    """``drain()`` (or ``drain(app)``): process everything queued, then return."""
    def _drain(_app: App | None = None) -> None:
        drain_app(_app or app, worker)
    return _drain


def fund_merchant(merchant_id: str = "m1", amount: int = 10_000_000, currency: str = "CNY") -> None:
    """Given the payment system reported `amount` available for the merchant (refunds can then be
    deducted automatically; without it the floor waits for an offline-transfer voucher)."""
    from models import ledger
    from models.base import database
    with database.atomic():
        ledger.sync_merchant_balance(merchant_id, amount, currency, key=f"test-fund:{merchant_id}:{amount}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)])
def db_app(request: pytest.FixtureRequest, app: App) -> Iterator[App]:
    """The test app on its SQLite database, or on a fresh PostgreSQL database with the same policy
    (for what must hold on both: compiled statements, UNIONs whose types PostgreSQL checks)."""
    if request.param == "sqlite":
        with app.db.connection_context():
            yield app
        return
    pg = make_pg_app(fresh_pg_database(f"disputes_test_{request.module.__name__.rsplit('.', 1)[-1]}"),
                     app.policy)
    with pg.db.connection_context():
        yield pg
    pg.db.close()
