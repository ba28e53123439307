"""The supervisor dashboard: backlog, oldest waiting, SLA breaches, throughput, load, QC and satisfaction."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from flask.testing import FlaskClient

from desk.web.board import build_board
from disputes.wiring import App
from models.outbox import Dispatch
from models.party import SurveyAnswer
from models.ticket import Ticket
from tests.desk.conftest import Caller, act, in_stage, new_ticket


def scene(app: App, agents: dict[str, Caller]) -> dict[str, Ticket]:
    """Two complaints waiting for takeover (the older one late), one held in stage 1, one closed by s4a with a
    survey of 4, and a judgment flagging s1a's category."""
    late = new_ticket(app)
    waiting = new_ticket(app)
    past = datetime.now(timezone.utc) - timedelta(hours=3)
    Ticket.update(state_entered_at=past, sla_accept_due=past + timedelta(hours=1)).where(Ticket.id == late.id).execute()
    held = act(app, new_ticket(app), "take_over", agents["s1b"])
    closed = in_stage(app, agents, 3, assignee="s3a")
    closed = act(app, closed, "judge", agents["s3a"], {"liability": "merchant", "remedy": "full_refund"},
                 qc={"verdict": "flag", "reason_code": "wrong_category", "about": agents["s1a"].agent.id})
    closed = act(app, closed, "claim", agents["s4a"])
    closed = act(app, closed, "verify_refund", agents["s4a"], qc={"verdict": "ok", "about": agents["s3a"].agent.id})
    assert closed.state == "closed"
    SurveyAnswer.create(ticket_id=closed.id, user_id="u1", score=4)
    return {"late": late, "waiting": waiting, "held": held, "closed": closed}


def test_the_board_counts_the_floor_from_its_tables(app: App, agents: dict[str, Caller]) -> None:
    tickets = scene(app, agents)
    board = build_board(app, app.clock())
    stage1 = board.stages[0]
    assert stage1.states == [("awaiting_takeover", 2, 2), ("stage1", 1, 0)]
    assert stage1.oldest is not None and stage1.oldest.id == tickets["late"].id
    assert board.breach_counts == {"accept": 1, "first_feedback": 0, "resolve": 0}
    assert [(t.id, broken) for t, broken in board.breached] == [(tickets["late"].id, ["accept"])]
    decided, arrived, closed = (sum(row[i] for row in board.throughput) for i in (1, 2, 3))
    assert (arrived, closed) == (4, 1) and decided >= 6
    rows = {row.agent.name: row for row in board.agents}
    assert rows["s1b"].load == 1 and rows["s1a"].load == 0
    assert (rows["s1a"].qc_flags, rows["s1a"].qc_total, rows["s1a"].qc_reasons) == (1, 1, {"wrong_category": 1})
    assert (rows["s3a"].qc_flags, rows["s3a"].qc_total) == (0, 1)
    assert (rows["s4a"].satisfaction, rows["s4a"].surveys) == (4.0, 1)
    assert rows["s3a"].satisfaction is None


def test_a_supervisor_sees_the_dashboard_and_its_refreshing_panel(client: FlaskClient, app: App, signed_in,
                                                                  agents: dict[str, Caller]) -> None:
    tickets = scene(app, agents)
    signed_in(client, agents["s4b"])
    page = client.get("/dashboard/")
    assert page.status_code == 200
    html = page.text
    assert 'data-refresh="10" data-src="/dashboard/panel"' in html
    assert re.search(r'data-state="awaiting_takeover">\s*<th[^>]*>stage1', html)
    assert f'data-oldest="{tickets["late"].id}"' in html
    assert re.search(r'data-breach="accept"><b>1</b>', html)
    assert re.search(r'data-agent="s1a">.*?class="agent-flags">1</span> / 1', html, re.S)
    assert "Wrong product category ×1" in html
    assert re.search(r'data-agent="s4a">.*?class="num agent-satisfaction">4.00', html, re.S)
    panel = client.get("/dashboard/panel")
    assert panel.status_code == 200 and panel.text.lstrip().startswith('<p class="muted" id="board-updated">')
    assert "<html" not in panel.text


def test_a_stage_whose_routing_found_no_agent_raises_the_alarm(client: FlaskClient, app: App, signed_in,
                                                               agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 2)  # waiting in stage 2, unassigned
    Dispatch.create(queue="stage2", kind="arrive", ticket_id=ticket.id, payload={"ticket_id": ticket.id},
                    done_at=datetime.now(timezone.utc), outcome="no agent available")
    board = build_board(app, app.clock())
    assert [row.no_agent for row in board.stages] == [0, 1, 0, 0]
    signed_in(client, agents["s4a"])
    assert 'data-alarm="stage2"' in client.get("/dashboard/").text


def test_the_dashboard_shows_tomorrows_plan_beside_the_agents_present_or_why_there_is_none(
        client: FlaskClient, app: App, signed_in, agents: dict[str, Caller]) -> None:
    import time

    scene(app, agents)
    signed_in(client, agents["s4b"])
    # The first look starts the plan in the background and says so
    first = client.get("/dashboard/panel").text
    assert 'id="plan"' in first
    # Then, with a handful of tickets, it says plainly that there is too little data, naming it
    deadline = time.monotonic() + 10
    while 'data-plan="refused"' not in (panel := client.get("/dashboard/panel").text):
        assert time.monotonic() < deadline, "the plan was never made"
        time.sleep(0.05)
    assert re.search(r"only \d+ complaints were admitted", panel)
    # And beside it each stage's roster and who is present now
    assert re.search(r'data-plan-stage="stage1"><th>stage1</th><td class="num">2</td><td class="num">2</td>', panel)
