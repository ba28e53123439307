"""The desk's hot path in statements: a decision is its locked read, one in-flight check and its
dispatch; a ticket read is the row and one statement beside it."""
from __future__ import annotations

from datetime import datetime, timezone

import peewee
import pytest

from desk.actions import load_ticket, submit_action
from desk.errors import ApiError
from disputes.wiring import App
from models.views.ticket import ticket_json

from .conftest import STAGE1_PARAMS, act, add_agent, new_ticket
from tests.statements import Statements

EVIDENCE = {"action": "request_evidence", "params": {**STAGE1_PARAMS, "from": "user", "items": ["photo"]}}


def test_a_decision_is_three_statements_the_first_reading_the_whole_row_with_its_lock(db_app: App) -> None:
    agent = add_agent("s1a", 1)
    ticket = act(db_app, new_ticket(db_app), "take_over", agent)
    with Statements() as decision:
        submit_action(ticket.id, agent.agent, {**EVIDENCE, "expected_version": ticket.version}, db_app)
    locked, in_flight, written = decision.sql
    assert '"t1"."closed_at"' in locked and 'FROM "ticket"' in locked  # the whole row, read once
    assert locked.rstrip().upper().endswith("FOR UPDATE") == isinstance(db_app.db, peewee.PostgresqlDatabase)
    assert 'FROM "dispatch"' in in_flight
    assert written.startswith('INSERT INTO "dispatch"')


def test_a_second_decision_on_the_version_is_refused_after_one_in_flight_check(db_app: App) -> None:
    agent = add_agent("s1a", 1)
    ticket = act(db_app, new_ticket(db_app), "take_over", agent)
    body = {**EVIDENCE, "expected_version": ticket.version}
    submit_action(ticket.id, agent.agent, body, db_app)
    with Statements() as again, pytest.raises(ApiError) as refused:
        submit_action(ticket.id, agent.agent, body, db_app)
    assert (refused.value.status, refused.value.code) == (409, "version_conflict")
    assert len(again.sql) == 2 and 'FROM "dispatch"' in again.sql[1]


def test_a_ticket_read_is_two_statements(db_app: App) -> None:
    agent = add_agent("s1a", 1)
    ticket_id = act(db_app, new_ticket(db_app), "take_over", agent).id
    with Statements() as read:
        ticket_json(load_ticket(ticket_id), agent.agent, db_app.policy, datetime.now(timezone.utc))
    assert len(read.sql) == 2, read.sql
