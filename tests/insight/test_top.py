"""`disputes top`: one frame of the live view, and the figures behind it."""
from __future__ import annotations

import io
from typing import Callable

import pytest
from click.testing import CliRunner
from rich.console import Console

from disputes.cli import main
from tools.top import left_pool, render, snapshot
from disputes.wiring import App
from models.agent import Agent
from models.change import Actor
from models.workflow import apply
from workers.intake import Admission


@pytest.fixture
def policy(make_policy):
    """Push routing, so that arrivals are messages on the stage queues (pull routing sends none)."""
    return make_policy(routing={"mode": "push"})


def floor_with_one_decision(app: App, publish: Callable[..., Admission], complaint: Callable[..., dict]) -> None:
    """Two complaints waiting for takeover, one taken over and sent to judgment, one negotiating."""
    agent = Agent.create(name="s1", stage=1, token_hash="h1")
    ids = [publish("complaint.submitted", complaint(negotiation="failed")).ticket_id for _ in range(3)]
    publish("complaint.submitted", complaint())
    apply(ids[0], "take_over", Actor.agent(1, agent.id), {}, app.policy)
    apply(ids[0], "to_judgment", Actor.agent(1, agent.id), {"dispute_status": "not_reconciled", "category": "food"},
          app.policy)


def test_a_frame_counts_backlog_per_stage_and_what_left_each_stage_in_the_last_minute(
        app: App, publish: Callable[..., Admission], complaint: Callable[..., dict]) -> None:
    floor_with_one_decision(app, publish, complaint)
    frame = snapshot(app)
    assert frame.backlog["awaiting_takeover"].tickets == 2 and frame.backlog["stage3"].tickets == 1
    assert left_pool(frame.last_minute, "stage1") == 1  # to_judgment left stage 1; the takeover stayed in it
    assert left_pool(frame.last_minute, "stage3") == 0
    assert frame.depths["stage1"] == 3 and frame.undone["stage3"] == 1
    out = io.StringIO()
    Console(file=out, width=120).print(render(frame))
    text = out.getvalue()
    assert "Stages" in text and "Open states" in text and "negotiating" in text and "SLA breaches" in text


def test_top_once_prints_one_frame_and_exits(app: App, publish: Callable[..., Admission],
                                              complaint: Callable[..., dict]) -> None:
    floor_with_one_decision(app, publish, complaint)
    env = {"OP_DATABASE_URL": app.settings.database_url, "OP_BROKER_URL": "memory://", "OP_INTAKE_URL": "memory://"}
    result = CliRunner().invoke(main, ["top", "--once"], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in result.stdout.splitlines() if line.count("│") == 8}
    assert set(rows) >= {"negotiation", "stage1", "stage2", "stage3", "stage4"}
    waiting, oldest, out_last_minute, _, broker, undone = rows["stage1"]
    assert (waiting, out_last_minute, undone) == ("2", "1", "4")  # two wait for takeover; one went to judgment
    assert "awaiting_takeover" in result.stdout
