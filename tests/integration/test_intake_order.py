"""Two follow-ups for one ticket that arrive together are applied in arrival order, however many
intake processes run (SPEC §4; README "Intake order"): RabbitMQ, PostgreSQL, two real
``disputes intake`` processes on one queue."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest
from kombu import Connection, Producer

from tests.integration.conftest import PG_DSN, fresh_pg_database, make_app, need
from tests.integration.test_hostile_intake import _rabbitmqctl

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parents[2]
DISPUTES = [str(Path(sys.executable).parent / "disputes")]
TICKETS = 150


@pytest.fixture
def two_intakes(tmp_path: Path) -> Iterator[tuple[Producer, list[subprocess.Popen], str]]:
    need(5432, "PostgreSQL")
    need(5672, "RabbitMQ")
    suffix = uuid.uuid4().hex[:8]
    db_name, vhost = f"disputes_order_{suffix}", f"disputes-order-{suffix}"
    if not (_rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        pytest.skip("needs rabbitmqctl for a private vhost (two systems on one vhost share the intake queue)")
    amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    database_url = fresh_pg_database(db_name)
    from policy import default_policy_dict, policy_from_dict
    app = make_app(database_url, policy_from_dict(default_policy_dict()), intake_url=amqp_url)
    from workers.intake import declare_topology
    connection = Connection(amqp_url, transport_options={"confirm_publish": True})
    declare_topology(connection)
    env = {**os.environ, "OP_DATABASE_URL": database_url, "OP_INTAKE_URL": amqp_url,
           "OP_BROKER_URL": "redis://127.0.0.1:6379/12", "PYTHONUNBUFFERED": "1"}
    processes = []
    for n in range(2):
        with open(tmp_path / f"intake-{n}.log", "wb") as log:
            processes.append(subprocess.Popen(DISPUTES + ["intake"], env=env, cwd=str(REPO), stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    try:
        yield Producer(connection.channel()), processes, vhost
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        connection.release()
        app.db.close()
        _rabbitmqctl("delete_vhost", vhost)
        admin = psycopg2.connect(PG_DSN)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        admin.close()


def publish(producer: Producer, routing_key: str, body: dict, message_id: str) -> None:
    producer.publish(json.dumps(body).encode(), exchange="op.intake", routing_key=routing_key, message_id=message_id,
                     content_type="application/json", content_encoding="utf-8", delivery_mode=2, retry=True)


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        time.sleep(0.1)


def test_follow_ups_that_arrive_together_apply_in_arrival_order_with_two_intake_processes(two_intakes) -> None:
    from models.audit import TicketEvent
    from models.base import database
    from models.intake import ProcessedMessage, RejectedMessage
    from models.ticket import Ticket
    from tests.conftest import complaint_body

    producer, processes, vhost = two_intakes
    refs = [f"ORD-{n}" for n in range(TICKETS)]
    for ref in refs:
        publish(producer, "complaint.submitted", complaint_body(source="order-shop", external_ref=ref), f"c-{ref}")
    with database.connection_context():
        wait_for(lambda: Ticket.select().count() == TICKETS, 60, "every complaint admitted")
    # When, for each ticket, the merchant's evidence and the buyer's withdrawal arrive back to back —
    # evidence first for even tickets, the withdrawal first for odd ones
    evidence = {"schema_version": 1, "party": "merchant", "items": [{"kind": "photo", "uri": "https://f.example/1"}]}
    for n, ref in enumerate(refs):
        named = {"source": "order-shop", "external_ref": ref}
        pair = [("evidence.submitted", {**evidence, **named}, f"e-{ref}"),
                ("customer.withdrew", {"schema_version": 1, "user_id": "u1", **named}, f"w-{ref}")]
        for routing_key, body, message_id in (pair if n % 2 == 0 else pair[::-1]):
            publish(producer, routing_key, body, message_id)
    with database.connection_context():
        wait_for(lambda: ProcessedMessage.select().count() + RejectedMessage.select().count() >= 3 * TICKETS, 90,
                 "every follow-up admitted or rejected")
        assert all(p.poll() is None for p in processes), "an intake process died"
        # Then each ticket shows the order its messages arrived in: evidence then withdrawal, or the
        # withdrawal alone (the evidence after it refused: the ticket was closed)
        trails = {}
        for ticket in Ticket.select():
            trails[ticket.external_ref] = [e.action for e in TicketEvent.select().where(TicketEvent.ticket == ticket.id)
                                           .order_by(TicketEvent.version)]
        wrong = [ref for n, ref in enumerate(refs)
                 if trails[ref] != (["submit", "submit_evidence", "withdraw"] if n % 2 == 0 else ["submit", "withdraw"])]
        assert not wrong, f"{len(wrong)} tickets applied their follow-ups out of arrival order: " \
                          f"{[(ref, trails[ref]) for ref in wrong[:5]]}"
        assert RejectedMessage.select().count() == TICKETS // 2
    # And every delivery was acknowledged (a batch is acked with one frame): none waits unacked
    wait_for(lambda: unacked(vhost) == 0, 10, "no delivery left unacknowledged")


def unacked(vhost: str) -> int:
    done = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "messages_unacknowledged"],
                          capture_output=True, text=True, timeout=60)
    counts = [int(line.split()[1]) for line in done.stdout.splitlines()
              if line.split() and line.split()[0] == "disputes.intake"]
    assert counts, done.stdout + done.stderr
    return counts[0]


def test_an_intake_queue_declared_by_an_earlier_release_is_still_consumed_with_a_warning(caplog) -> None:
    """RabbitMQ cannot add x-single-active-consumer to an existing queue: the intake keeps using it
    as it is, and says so, rather than failing to start."""
    need(5672, "RabbitMQ")
    from kombu import Queue

    from workers.intake import declare_topology, intake_exchange, intake_queue
    vhost = f"disputes-legacy-{uuid.uuid4().hex[:8]}"
    if not (_rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        pytest.skip("needs rabbitmqctl for a private vhost")
    try:
        with Connection(f"amqp://guest:guest@127.0.0.1:5672/{vhost}") as connection:
            legacy = Queue(intake_queue.name, exchange=intake_exchange, routing_key="#", durable=True)
            with connection.channel() as channel:
                legacy(channel).declare()
            with caplog.at_level("WARNING", logger="disputes.intake"):
                used = declare_topology(connection)
            assert used.queue_arguments in (None, {}) and used.name == intake_queue.name
            assert "x-single-active-consumer" in caplog.text
            with connection.channel() as channel:
                Producer(channel).publish(b"{}", exchange="op.intake", routing_key="customer.withdrew")
                assert used(channel).get(no_ack=True) is not None
    finally:
        _rabbitmqctl("delete_vhost", vhost)
