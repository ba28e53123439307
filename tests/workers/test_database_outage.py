"""A stage worker cut off from PostgreSQL (seen in the network soak): each message it cannot apply is
retried by dramatiq as after any failed try, but the log says "database unreachable" once for the
outage and "reachable again after N failures" once at its end — not a traceback per message per try
(a 2-second restart gave 18 of them), and no "the failed try could not be counted" per message."""
from __future__ import annotations

import dataclasses
import logging
import time

import dramatiq
import pytest

from disputes.wiring import connect_database
from models.base import database
from models.dispatches import AgentDecision
from models.outbox import Dispatch, new_dispatch
from tests.integration.conftest import fresh_pg_database, make_app
from tests.network import Link
from workers.base import StageWorker

pytestmark = pytest.mark.servers


def test_a_worker_cut_off_from_the_database_logs_the_outage_once_and_its_messages_apply_after(
        policy, caplog: pytest.LogCaptureFixture) -> None:
    url = fresh_pg_database("disputes_test_worker_outage")
    app = make_app(url, policy)
    with Link(5432) as link:
        app = dataclasses.replace(app, db=connect_database(url.replace(":5432/", f":{link.port}/")))
        worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=50)
        try:
            with database.atomic():  # decisions on tickets that do not exist: refused once applied
                refs = [new_dispatch("stage1", AgentDecision(ticket_id=424240 + n, agent_id=7,
                                                             action="request_evidence")) for n in range(4)]
            app.db.close()  # this thread's connection back to the pool (the refusal closes it there)
            actor = StageWorker(app, "stage1").declare()
            caplog.set_level(logging.INFO)
            link.refuse()  # PostgreSQL gone: pooled connections closed, new ones refused
            worker.start()
            for ref in refs:
                actor.send_with_options(args=(ref.id,), kwargs=ref.message_kwargs(), min_backoff=100,
                                        max_backoff=300, max_retries=100)
            time.sleep(2.0)  # every message tried, and tried again, while the database is away
            link.restore()
            app.broker.join("stage1", timeout=30_000)
            worker.join()
            with database.connection_context():
                done = list(Dispatch.select().where(Dispatch.id.in_([r.id for r in refs])))
            assert all(d.done_at is not None and d.outcome.startswith("refused") for d in done), \
                [(d.id, d.outcome) for d in done]
        finally:
            worker.stop()
            app.db.close_all()
    said = [r.getMessage() for r in caplog.records if r.name == "disputes.workers" and r.levelno >= logging.WARNING]
    assert len(said) == 2, said
    assert said[0].startswith("database unreachable: OperationalError")
    assert said[1].startswith("database reachable again after ")
    failures = int(said[1].split(" after ")[1].split()[0])
    assert failures > len(refs), "each message was tried more than once while the database was away"
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
