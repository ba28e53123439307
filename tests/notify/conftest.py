"""Notification fixtures: a real SMTP server (aiosmtpd) and a webhook endpoint, both on loopback.

    def test_something(app, worker, smtp_server, floor_ticket, act, drain):
        ticket_id = floor_ticket(contact={"email": "buyer@example.com"})      # send
        act(1, ticket_id, "request_evidence", REQUEST_USER); drain()          # join
        assert smtp_server.messages[0]["To"] == "buyer@example.com"            # assert
"""
from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller

from disputes.settings import QUEUES
from disputes.wiring import App
from models.change import Actor
from models.dispatches import AgentDecision
from models.outbox import new_dispatch
from models.workflow import apply
from tests.conftest import fund_merchant
from models.sending import send_dispatches

STAGE1_AGENT, STAGE3_AGENT, STAGE4_AGENT = 11, 31, 41
REQUEST_USER = {"dispute_status": "not_reconciled", "category": "apparel", "from": "user",
                "items": ["photo", "chat_log"]}
REQUEST_MERCHANT = dict(REQUEST_USER, **{"from": "merchant", "items": ["invoice"]})
CONTACT = {"email": "buyer.wang@example.com", "phone": "13812345678"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


class Mailbox:
    """What the local SMTP server received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox()
    mailbox.port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


class Webhook:
    """A local endpoint that answers 500 to the first `failures` POSTs, then 200."""

    def __init__(self) -> None:
        self.failures = 0
        self.calls: list[dict] = []
        self.statuses: list[int] = []
        self.url = ""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hook.calls.append(json.loads(body))
            status = 500 if len(hook.calls) <= hook.failures else 200
            hook.statuses.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/disputes"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast_retries(app: App) -> None:
    """Notification retries back off milliseconds instead of seconds."""
    app.actors["notify"].options.update(min_backoff=20, max_backoff=100)


@pytest.fixture
def act(app: App) -> Callable[..., int]:
    """``act(stage, ticket_id, action, params=None, agent_id=None)``: an agent's decision, as the desk sends it."""
    def _act(stage: int, ticket_id: int, action: str, params: dict | None = None, agent_id: int | None = None) -> int:
        decision = AgentDecision(ticket_id, agent_id or 10 * stage + 1, action, params=params or {},
                                 qc={"verdict": "ok"} if stage > 1 else None)
        row = new_dispatch(f"stage{stage}", decision)
        send_dispatches(app.broker, [row.id])
        return row.id
    return _act


@pytest.fixture
def drain_stages(app: App, worker) -> Callable[[], None]:
    """Join every queue but ``notify``: the tickets move while deliveries may still be retrying."""
    def _drain() -> None:
        stages = [q for q in QUEUES if q != "notify"]
        for _ in range(50):
            for queue in stages:
                app.broker.join(queue, fail_fast=True, timeout=10_000)
            if all(app.broker.queues[q].unfinished_tasks == 0 for q in stages):
                return
        raise AssertionError("the stage queues did not drain")
    return _drain


@pytest.fixture
def floor_ticket(app: App, publish, complaint, drain_stages) -> Callable[..., int]:
    """``floor_ticket(**complaint_overrides)``: a ticket whose negotiation failed, taken over, in stage1."""
    def _make(**overrides: object) -> int:
        fund_merchant()
        ticket_id = publish("complaint.submitted", complaint(negotiation="failed", **overrides)).ticket_id
        drain_stages()
        outcome = apply(ticket_id, "take_over", Actor.agent(1, STAGE1_AGENT), {}, app.policy)
        send_dispatches(app.broker, outcome.dispatches)
        drain_stages()
        return ticket_id
    return _make
