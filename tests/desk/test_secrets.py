"""Secrets and personal data stay where they belong: tokens hashed and never logged, contact masked.

Complements ``tests/desk/test_auth.py::test_tokens_never_reach_the_log`` (pytest's record capture)
and ``tests/insight/test_logs.py`` (the masking function): here the whole path is exercised and the
*JSON lines the processes write* are read, as a log shipper would.

* a token issued by ``disputes agents add`` appears nowhere in the database, only its SHA-256;
* requests carrying a token — valid, unknown, malformed, in a query string — leave no trace of it in
  the JSON logs (DEBUG level, every logger: peewee's SQL, werkzeug, ours) nor in an error body;
* a complaint's ``contact`` (the buyer's e-mail and phone) goes through the intake, the negotiation,
  notifications and their delivery, and never appears in clear in a log line, an ``op.events``
  body (the outbox, and what the relay actually publishes) or an audit row.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Callable, Iterator

import dramatiq
import pytest
from flask.testing import FlaskClient
from kombu import Exchange, Queue

from desk import create_api
from models.agent import add_agent
from disputes.logs import HANDLER_NAME, setup_logging
from policy import policy_from_dict
from disputes.wiring import App
from models.agent import hash_token
from models.audit import TicketEvent
from models.base import database
from models.outbox import OutboxEvent
from models.ticket import Ticket
from tests.conftest import drain_app, fast_policy_dict, fund_merchant, running_app
from workers.intake import Intake

EMAIL, PHONE = "buyer.wang@example.com", "13812345678"


@pytest.fixture
def json_logs() -> Iterator[Callable[[], str]]:
    """Every logger at DEBUG into JSON lines, as the processes write them off a terminal."""
    stream = io.StringIO()
    setup_logging(logging.DEBUG, "json", stream)
    try:
        def text() -> str:
            raw = stream.getvalue()
            for line in raw.splitlines():
                json.loads(line)  # each line is one JSON object
            return raw
        yield text
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)


def whole_database() -> str:
    """Every row of every table, as SQL text (SQLite's dump)."""
    return "\n".join(database.connection().iterdump())


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------

def test_an_issued_token_is_stored_only_as_its_hash(app: App) -> None:
    # Given an agent added as `disputes agents add` does
    token = add_agent("alice", 2, supervisor=True)
    # Then no row of any table holds the token; the agent row holds its SHA-256
    dump = whole_database()
    assert token not in dump
    assert hash_token(token) in dump and hash_token(token) != token


def test_a_token_never_reaches_the_json_logs_or_an_error_body(app: App, json_logs: Callable[[], str]) -> None:
    token = add_agent("bob", 1)
    client: FlaskClient = create_api(app).test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    unknown = "tok-unknown-5f1e9c2a7b"
    malformed = f"Bearer {token} {token}"
    responses = [
        client.get("/me/tickets", headers=bearer),
        client.post("/me/claim", headers=bearer),
        client.get("/tickets/999999", headers=bearer),                     # a 404
        client.post("/tickets/1/actions", headers=bearer, data=b"{oops", content_type="application/json"),
        client.get(f"/tickets?source=shop&access_token={token}", headers=bearer),
        client.get("/me/tickets", headers={"Authorization": f"Bearer {unknown}"}),
        client.get("/me/tickets", headers={"Authorization": malformed}),
        client.get("/me/tickets", headers={"Authorization": f"Basic {token}"}),
    ]
    assert [r.status_code for r in responses] == [200, 204, 404, 400, 200, 401, 401, 401]
    logged = json_logs()
    assert "GET /me/tickets" in logged  # the requests were logged ...
    assert token not in logged and unknown not in logged  # ... without the token
    for response in responses:
        assert token not in response.get_data(as_text=True) and unknown not in response.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# contact data
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def full_app(tmp_path: Path) -> Iterator[App]:
    """An app with its stage actors declared (notifications are delivered by the notify queue)."""
    with running_app(tmp_path, "secrets.db", policy_from_dict(fast_policy_dict())) as built:
        yield built


def test_contact_is_masked_in_logs_events_and_audit_rows(full_app: App, json_logs: Callable[[], str]) -> None:
    app = full_app
    intake = Intake(app)
    worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        # Given a complaint that gives the buyer's e-mail and phone, settled in negotiation
        fund_merchant("m1")
        body = {"schema_version": 1, "source": "shop", "external_ref": "PII-1", "channel": "app",
                "order": {"order_id": "O-PII", "amount": 10000, "currency": "CNY", "category": "apparel",
                          "delivery": "platform", "status": "delivered"},
                "user_id": "u1", "merchant_id": "m1", "dispute_type": "quality", "claimed_amount": 5000,
                "description": "never arrived", "contact": {"email": EMAIL, "phone": PHONE},
                "occurred_at": "2026-11-20T10:00:00+08:00"}

        def send(routing_key: str, data: dict, message_id: str) -> None:
            assert intake.admit(routing_key, json.dumps(data).encode(), message_id).status == "admitted"
            drain_app(app, worker)

        send("complaint.submitted", body, "pii-1")
        ticket_id = Ticket.get(Ticket.external_ref == "PII-1").id
        send("merchant.responded", {"schema_version": 1, "ticket_id": ticket_id, "merchant_id": "m1",
                                    "option": "direct_refund"}, "pii-2")
        send("customer.confirmed", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u1", "accept": True},
             "pii-3")
        assert Ticket.get_by_id(ticket_id).state == "resolved"
        # and the relay publishes the outbox to op.events (kombu's in-process transport here)
        from scheduler.loop import Scheduler
        tap = Queue("test.pii.events", Exchange("op.events", type="topic", durable=True), routing_key="#")
        with app.kombu_connection() as connection:
            tap(connection.default_channel).declare()
            Scheduler(app).tick()
            published = []
            while (message := tap(connection.default_channel).get(no_ack=True)) is not None:
                published.append(message.body if isinstance(message.body, str) else message.body.decode())
    finally:
        worker.stop()

    rows = list(OutboxEvent.select())
    events = [json.dumps(e.body, ensure_ascii=False) for e in rows]
    notify = [json.dumps(e.body, ensure_ascii=False) for e in rows if e.routing_key.startswith("notify.")]
    audit = [json.dumps({"params": e.params, "data": e.data}, ensure_ascii=False) for e in TicketEvent.select()]
    logged = json_logs()
    # Then the buyer was notified (the contact was used, masked, in the notify events) ...
    assert notify and any("@example.com" in e for e in notify), events
    assert published, "the relay published nothing"
    assert "notify " in logged, "the log channel delivered nothing"
    assert "***@example.com" in logged, "the delivery line names the (masked) address"
    # ... and the address and the number appear in clear in no event, no audit row, no log line
    for where, texts in (("op.events (outbox)", events), ("op.events (published)", published),
                         ("audit rows", audit), ("logs", [logged])):
        for text in texts:
            assert EMAIL not in text and "buyer.wang" not in text, f"the e-mail address is in {where}: {text[:300]}"
            assert PHONE not in text, f"the phone number is in {where}: {text[:300]}"
