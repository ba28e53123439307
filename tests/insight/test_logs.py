"""Structured logs: JSON lines that say which ticket, stage and message, with personal data masked."""
from __future__ import annotations

import io
import json
import logging
from typing import Callable, Iterator

import dramatiq
import pytest

from disputes.logs import HANDLER_NAME, intake_context, log_context, mask, setup_logging
from disputes.wiring import App
from models.agent import Agent
from models.base import database
from models.dispatches import AgentDecision
from models.outbox import new_dispatch
from models.sending import send_dispatches
from workers.intake import Admission

log = logging.getLogger("disputes.test")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict]]]:
    """JSON log lines written to a pipe-like stream (not a terminal): ``lines()`` parses them."""
    stream = io.StringIO()
    setup_logging(logging.INFO, "auto", stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)


def test_a_line_logged_while_a_stage_worker_handles_a_ticket_names_the_ticket_stage_and_message(
        app: App, worker: dramatiq.Worker, drain: Callable[[], None], publish: Callable[..., Admission],
        complaint: Callable[..., dict], lines: Callable[[], list[dict]]) -> None:
    ticket_id = publish("complaint.submitted", complaint(negotiation="failed")).ticket_id
    agent = Agent.create(name="s1", stage=1, token_hash="h1")
    with database.atomic():  # a decision on a version long gone: the stage worker refuses it, and says so
        stale = new_dispatch("stage1", AgentDecision(ticket_id=ticket_id, agent_id=agent.id, action="take_over",
                                                     expected_version=99))
    send_dispatches(app.broker, [stale.id])
    drain()
    [refusal] = [line for line in lines() if "refused" in line["message"]]
    assert refusal["ticket_id"] == ticket_id and refusal["stage"] == "stage1"
    assert isinstance(refusal["message_id"], str) and len(refusal["message_id"]) >= 32
    assert refusal["level"] == "INFO" and refusal["logger"] == "disputes.workers" and refusal["time"].endswith("+00:00")


def test_personal_data_is_masked_in_messages_extras_and_tracebacks(lines: Callable[[], list[dict]]) -> None:
    with log_context(ticket_id=7, stage="intake", message_id="m-1"):
        log.info("contact %s", {"email": "alice.smith@example.com", "phone": "13812345678"})
        log.warning("token leaked", extra={"header": "Authorization: Bearer abc.def"})
        try:
            raise ValueError("bad address bob@shop.cn")
        except ValueError:
            log.exception("failed for %s", "+1 (415) 555-2671")
    first, second, third = lines()
    assert first["message"] == "contact {'email': 'a***@example.com', 'phone': '***5678'}"
    assert (first["ticket_id"], first["stage"], first["message_id"]) == (7, "intake", "m-1")
    assert second["header"] == "Authorization: Bearer ***"
    assert "bob@" not in third["exception"] and "b***@shop.cn" in third["exception"]
    assert third["message"] == "failed for +***2671"


def test_lines_outside_a_ticket_still_carry_the_fields_as_null(lines: Callable[[], list[dict]]) -> None:
    log.info("scheduler idle")
    [line] = lines()
    assert (line["ticket_id"], line["stage"], line["message_id"]) == (None, None, None)


def test_an_intake_message_binds_the_ticket_it_names(lines: Callable[[], list[dict]]) -> None:
    body = json.dumps({"schema_version": 1, "ticket_id": 42, "party": "user", "items": []}).encode()
    with intake_context("evidence.submitted", body, "msg-9"):
        log.info("evidence admitted")
    with intake_context("complaint.submitted", b"\xff\xfe not json", None):
        log.info("rejected")
    first, second = lines()
    assert (first["ticket_id"], first["stage"], first["message_id"], first["routing_key"]) == (
        42, "intake", "msg-9", "evidence.submitted")
    assert (second["ticket_id"], second["stage"], second["message_id"]) == (None, "intake", None)


def test_a_terminal_gets_plain_lines_with_the_context_appended() -> None:
    stream = Terminal()
    setup_logging(logging.INFO, "auto", stream)
    try:
        with log_context(ticket_id=3, stage="stage2", message_id="abc"):
            log.info("claimed by carol@example.com")
    finally:
        setup_logging(logging.INFO, "text", io.StringIO())
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
    line = stream.getvalue().strip()
    assert line.endswith("INFO disputes.test: claimed by c***@example.com [ticket=3 stage=stage2 message=abc]")
    assert not line.startswith("{")


def test_setting_up_twice_keeps_one_handler() -> None:
    root = logging.getLogger()
    try:
        setup_logging(logging.INFO, "json", io.StringIO())
        setup_logging(logging.INFO, "json", io.StringIO())
        assert len([h for h in root.handlers if h.get_name() == HANDLER_NAME]) == 1
    finally:
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)


@pytest.mark.parametrize("text, masked", [
    ("mail dave.o@mail.example.org now", "mail d***@mail.example.org now"),
    ('{"phone": "+86 138 1234 5678"}', '{"phone": "***5678"}'),
    ("token=abcdef&page=2", "token=***&page=2"),
    ("x-op-signature: 9f86d081884c7d65", "x-op-signature: ***"),
    ("ticket 1234567, order O-20261123, amount 10000", "ticket 1234567, order O-20261123, amount 10000"),
])
def test_masking_hides_contacts_and_secrets_but_not_ids_or_amounts(text: str, masked: str) -> None:
    assert mask(text) == masked and mask(masked) == masked
