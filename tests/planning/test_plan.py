"""``disputes plan`` on a history written into the database with known times: what `measure` reads
of it, when the plan refuses, the agents it asks for, and the command as a supervisor runs it."""
from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from disputes.cli import main
from disputes.wiring import App
from models.agent import Agent, add_agent
from models.audit import TicketEvent
from models.base import database, utcnow
from models.change import Actor
from models.ticket import Ticket
from models.workflow import apply, open_ticket
from planning.erlang import servers_needed
from planning.forecast import Forecast
from planning.measure import STAGES, measure
from planning.staffing import (
    MIN_COMPLAINTS,
    MIN_HANDLING_SAMPLES,
    PlanRefused,
    check_enough,
    make_plan,
)

#: The measured window of the unit tests (the CLI's is the 28 days before now).
SINCE = datetime(2026, 11, 2, tzinfo=UTC)
UNTIL = datetime(2026, 11, 30, tzinfo=UTC)
START = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai

Move = tuple[str, str, str, float]  # to_state, actor, action, minutes after the previous move


# -- writing a history --------------------------------------------------------------------------

_refs = iter(range(1, 1_000_000))


def write_ticket(start: datetime, moves: list[Move]) -> int:
    """A ticket and its audit rows: the first move from nothing, each later one from the state before."""
    ref = f"P-{next(_refs)}"
    rows, state, at = [], None, start
    for version, (to_state, actor, action, minutes) in enumerate(moves, start=1):
        at = at + timedelta(minutes=minutes)
        rows.append({"version": version, "from_state": state, "to_state": to_state, "actor": actor,
                     "action": action, "at": at})
        state = to_state
    with database.atomic():
        ticket = Ticket.create(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1",
                               order_id=ref, order_amount=10_000, currency="CNY", category="apparel",
                               delivery="platform", order_status="delivered", dispute_type="quality",
                               claimed_amount=5_000, occurred_at=start, state=state, version=len(moves),
                               created_at=start)
        TicketEvent.insert_many([{**row, "ticket": ticket.id} for row in rows]).execute()
    return ticket.id


def direct(a1: str, a3: str, a4: str, w1: float, h1: float, w3: float, h3: float, w4: float, h4: float) -> list[Move]:
    """Straight to the floor, taken over, sent to judgment, judged, refund verified."""
    return [("awaiting_takeover", "system", "submit", 0), ("stage1", a1, "take_over", w1),
            ("stage3", a1, "to_judgment", h1), ("stage3", a3, "claim", w3), ("stage4", a3, "judge", h3),
            ("stage4", a4, "claim", w4), ("closed", a4, "verify_refund", h4)]


def via_evidence(a1: str, a2: str, a3: str, a4: str, w1: float, h1: float, evidence: float, w2: float, h2: float,
                 w3: float, h3: float, w4: float, h4: float) -> list[Move]:
    """As `direct`, with an evidence round reviewed in stage 2 between."""
    return [("awaiting_takeover", "system", "submit", 0), ("stage1", a1, "take_over", w1),
            ("awaiting_evidence", a1, "request_evidence", h1), ("stage2", "merchant", "submit_evidence", evidence),
            ("stage2", a2, "claim", w2), ("stage3", a2, "to_judgment", h2), ("stage3", a3, "claim", w3),
            ("stage4", a3, "judge", h3), ("stage4", a4, "claim", w4), ("closed", a4, "verify_refund", h4)]


def agent(name: str, stage: int, capacity: int = 10, presence: str = "available", revoked: bool = False) -> str:
    add_agent(name, stage, capacity=capacity)
    Agent.update(presence=presence, revoked_at=utcnow() if revoked else None).where(Agent.name == name).execute()
    return f"agent:{Agent.get(Agent.name == name).id}"


def floor(db_app: App) -> dict[str, str]:
    """One agent per stage (capacities 4, 10, 5, 2) plus a revoked one: their actor strings."""
    return {"s1": agent("ann", 1, capacity=4), "s2": agent("bo", 2), "s3": agent("cy", 3, capacity=5),
            "s4": agent("di", 4, capacity=2), "gone": agent("ex", 1, capacity=100, revoked=True)}


def busy_month(actors: dict[str, str], start: datetime, complaints: int = 60, evidence_every: int = 3) -> dict:
    """`complaints` tickets 7 minutes apart, every `evidence_every`-th through an evidence round; the
    handling times and waits (seconds) each stage's agent took, and the delays (minutes) from each
    complaint to its arrival at each stage, per stage."""
    handling: dict[str, list[float]] = {stage: [] for stage in STAGES}
    waits: dict[str, list[float]] = {stage: [] for stage in STAGES}
    delays: dict[str, list[float]] = {stage: [] for stage in STAGES}
    s1, s2, s3, s4 = actors["s1"], actors["s2"], actors["s3"], actors["s4"]
    for i in range(complaints):
        w1, h1, w3, h3, w4, h4 = 2 + i % 4, 6 + i % 5, 1 + i % 3, 15 + i % 7, 1, 3 + i % 2
        at = start + timedelta(minutes=7 * i)
        delays["stage1"].append(0.0)  # straight to the floor
        to_stage3 = w1 + h1
        if i % evidence_every == 0:
            w2, h2 = 4 + i % 2, 10 + i % 6
            write_ticket(at, via_evidence(s1, s2, s3, s4, w1, h1, 45, w2, h2, w3, h3, w4, h4))
            handling["stage2"].append(h2 * 60.0)
            waits["stage2"].append(w2 * 60.0)
            delays["stage2"].append(w1 + h1 + 45)
            to_stage3 += 45 + w2 + h2
        else:
            write_ticket(at, direct(s1, s3, s4, w1, h1, w3, h3, w4, h4))
        delays["stage3"].append(to_stage3)
        delays["stage4"].append(to_stage3 + w3 + h3)
        for stage, h, w in (("stage1", h1, w1), ("stage3", h3, w3), ("stage4", h4, w4)):
            handling[stage].append(h * 60.0)
            waits[stage].append(w * 60.0)
    return {"handling": handling, "waits": waits, "delays": delays}


def expected_arrivals(counts: list[float], per_complaint: float, delays: list[float]) -> list[float]:
    """Each hour's arrivals at a stage, computed from first principles: a complaint of hour j arrives
    uniformly in [j, j+1) and reaches the stage `delay` minutes later, so hour i gets the overlap
    of [j + delay, j + 1 + delay) with [i, i + 1), averaged over the delays written."""
    hours = []
    for i in range(len(counts)):
        total = 0.0
        for j, count in enumerate(counts):
            for delay in delays:
                begin = j + delay / 60
                total += count * max(0.0, min(i + 1, begin + 1) - max(i, begin)) / len(delays)
        hours.append(total * per_complaint)
    return hours


# -- what measure reads ---------------------------------------------------------------------------


def test_measure_finds_the_visits_handling_and_waits_written(db_app: App) -> None:
    a = floor(db_app)
    s1, s2, s3, s4 = a["s1"], a["s2"], a["s3"], a["s4"]
    other = agent("fay", 1, capacity=6, presence="away")
    # 1. straight through; a second complaint about the order is linked while in stage 1
    write_ticket(START, [("awaiting_takeover", "system", "submit", 0), ("stage1", s1, "take_over", 5),
                         ("stage1", "system", "link_complaint", 1), ("stage3", s1, "to_judgment", 11),
                         ("stage3", s3, "claim", 3), ("stage4", s3, "judge", 20), ("stage4", s4, "claim", 1),
                         ("closed", s4, "verify_refund", 4)])
    # 2. loops: evidence, cannot-judge back to stage 2, judged to payment, voucher, closed, appealed
    write_ticket(START + timedelta(hours=1), [
        ("awaiting_takeover", "system", "submit", 0), ("stage1", s1, "take_over", 2),
        ("awaiting_evidence", s1, "request_evidence", 6), ("stage2", "merchant", "submit_evidence", 30),
        ("stage2", s2, "claim", 10), ("stage3", s2, "to_judgment", 15), ("stage3", s3, "claim", 1),
        ("stage2", s3, "cannot_judge", 7), ("stage2", s2, "claim", 4), ("stage3", s2, "to_judgment", 8),
        ("stage3", s3, "claim", 2), ("awaiting_payment", s3, "judge", 10), ("stage4", "merchant", "upload_voucher", 60),
        ("stage4", s4, "claim", 5), ("closed", s4, "verify_refund", 3), ("stage3", "user", "appeal", 30)])
    # 3. withdrawn by the buyer while an agent held it: no handling time
    write_ticket(START + timedelta(hours=2), [("awaiting_takeover", "system", "submit", 0),
                                             ("stage1", s1, "take_over", 1), ("withdrawn", "user", "withdraw", 2)])
    # 4. through negotiation to the floor; taken over, not decided yet
    write_ticket(START + timedelta(hours=3), [("negotiating", "system", "submit", 0),
                                             ("awaiting_takeover", "merchant", "platform_judgment", 60),
                                             ("stage1", s1, "take_over", 10)])
    # 5. the lease ran out and another agent claimed it: handling from the claim that decided
    write_ticket(START + timedelta(hours=4), [("awaiting_takeover", "system", "submit", 0),
                                             ("stage1", s1, "take_over", 5), ("stage1", "scheduler", "lease_expired", 30),
                                             ("stage1", other, "claim", 10), ("stage3", other, "to_judgment", 6)])
    # outside the window: ignored
    write_ticket(SINCE - timedelta(days=1), direct(s1, s3, s4, 1, 1, 1, 1, 1, 1))
    write_ticket(UNTIL, direct(s1, s3, s4, 1, 1, 1, 1, 1, 1))

    measured = measure(SINCE, UNTIL)

    assert measured.complaints == 6  # five tickets and one linked complaint
    hour = START.replace(minute=0)
    assert measured.complaints_by_hour == {hour: 2, hour + timedelta(hours=1): 1, hour + timedelta(hours=2): 1,
                                           hour + timedelta(hours=3): 1, hour + timedelta(hours=4): 1}
    work = measured.stages
    assert [work[s].arrivals for s in STAGES] == [5, 2, 5, 2]
    assert measured.visits("stage3") == pytest.approx(5 / 6)
    assert sorted(work["stage1"].handling) == [360.0, 360.0, 720.0]
    assert sorted(work["stage1"].waits) == [60.0, 120.0, 300.0, 300.0, 600.0]
    assert sorted(work["stage2"].handling) == [480.0, 900.0]
    assert sorted(work["stage2"].waits) == [240.0, 600.0]
    assert sorted(work["stage3"].handling) == [420.0, 600.0, 1200.0]
    assert sorted(work["stage3"].waits) == [60.0, 120.0, 180.0]
    assert sorted(work["stage4"].handling) == [180.0, 240.0]
    assert sorted(work["stage4"].waits) == [60.0, 300.0]
    assert work["stage3"].mean_handling == pytest.approx(740.0)
    # the roster: revoked agents do not count; presence now; mean capacity
    assert (work["stage1"].agents, work["stage1"].present, work["stage1"].capacity) == (2, 1, 5.0)
    assert (work["stage3"].agents, work["stage3"].present, work["stage3"].capacity) == (1, 1, 5.0)


def test_measure_reads_the_audit_rows_the_workflow_writes(db_app: App) -> None:
    # The real workflow, not hand-written rows: a complaint reaching the floor, taken over after
    # 5 minutes, sent to judgment 12 minutes later.
    fields = {"source": "shop", "external_ref": "W-1", "channel": "app", "user_id": "u1", "merchant_id": "m1",
              "order_id": "W-1", "order_amount": 10_000, "currency": "CNY", "category": "apparel",
              "delivery": "platform", "order_status": "delivered", "dispute_type": "quality",
              "claimed_amount": 5_000, "occurred_at": START}
    ticket_id = open_ticket(fields, {"negotiation": "failed"}, db_app.policy, now=START).ticket.id  # type: ignore[union-attr]
    apply(ticket_id, "take_over", Actor.agent(1, 7), {}, db_app.policy, now=START + timedelta(minutes=5))
    apply(ticket_id, "to_judgment", Actor.agent(1, 7), {"dispute_status": "not_reconciled", "category": "apparel"},
          db_app.policy, now=START + timedelta(minutes=17))
    measured = measure(SINCE, UNTIL)
    assert measured.complaints == 1
    assert [measured.stages[s].arrivals for s in STAGES] == [1, 0, 1, 0]
    assert measured.stages["stage1"].waits == [300.0]
    assert measured.stages["stage1"].handling == [720.0]


# -- refusing to plan -----------------------------------------------------------------------------


def test_thin_data_is_refused_naming_the_counts_and_the_stages(db_app: App) -> None:
    a = floor(db_app)
    for i in range(6):
        moves = (via_evidence(a["s1"], a["s2"], a["s3"], a["s4"], 2, 5, 30, 3, 8, 1, 10, 1, 3) if i < 2
                 else direct(a["s1"], a["s3"], a["s4"], 2, 5, 1, 10, 1, 3))
        write_ticket(START + timedelta(hours=i), moves)
    write_ticket(START, [("awaiting_takeover", "system", "submit", 0)])  # arrived, never handled
    measured = measure(SINCE, UNTIL)
    with pytest.raises(PlanRefused) as refused:
        make_plan(Forecast([(START, 10.0)], "test"), measured, target_wait=timedelta(minutes=10), probability=0.8)
    reasons = refused.value.reasons
    assert len(reasons) == 5, reasons
    assert "only 7 complaints" in reasons[0] and f"at least {MIN_COMPLAINTS}" in reasons[0]
    assert "2026-11-02" in reasons[0] and "2026-11-30" in reasons[0]  # the window looked at
    for reason, (stage, samples) in zip(reasons[1:], [("stage1", 6), ("stage2", 2), ("stage3", 6), ("stage4", 6)]):
        assert reason.startswith(f"{stage}: {samples} handled tickets") and f"at least {MIN_HANDLING_SAMPLES}" in reason


def test_a_stage_nobody_reaches_is_not_a_gap_but_a_thin_stage_is(db_app: App) -> None:
    a = floor(db_app)
    busy_month(a, START, complaints=60, evidence_every=6)  # 10 through stage 2
    measured = measure(SINCE, UNTIL)
    with pytest.raises(PlanRefused) as refused:
        check_enough(measured)
    assert refused.value.reasons == [(f"stage2: 10 handled tickets measured (claim to decision); at least "
                                     f"{MIN_HANDLING_SAMPLES} are needed")]
    assert "stage2: 10 handled tickets" in str(refused.value)


def test_exactly_the_minimums_are_enough(db_app: App) -> None:
    a = floor(db_app)
    busy_month(a, START, complaints=MIN_COMPLAINTS, evidence_every=1)  # all 50 through stage 2
    check_enough(measure(SINCE, UNTIL))


# -- the plan -------------------------------------------------------------------------------------


@pytest.fixture
def history(db_app: App) -> Iterator[dict]:
    written = busy_month(floor(db_app), START, complaints=60, evidence_every=3)  # 20 through stage 2
    yield written


FORECAST = [0.0, 1.0, 5.0, 20.0, 60.0, 200.0]
CAPACITY = {"stage1": 4, "stage2": 10, "stage3": 5, "stage4": 2}


def forecast_of(counts: list[float]) -> Forecast:
    return Forecast([(START + timedelta(days=10, hours=i), c) for i, c in enumerate(counts)], "test forecast")


@pytest.mark.parametrize("probability, wait_minutes", [(0.8, 10), (0.95, 2), (0.8, 60)])
def test_agents_per_hour_are_erlang_servers_over_capacity(history: dict, probability: float,
                                                          wait_minutes: int) -> None:
    measured = measure(SINCE, UNTIL)
    plan = make_plan(forecast_of(FORECAST), measured, target_wait=timedelta(minutes=wait_minutes),
                     probability=probability)
    assert len(plan.rows) == 4 * len(FORECAST)
    visits = {"stage1": 1.0, "stage2": 20 / 60, "stage3": 1.0, "stage4": 1.0}
    for stage in STAGES:
        rows = [r for r in plan.rows if r.stage == stage]
        assert [r.hour for r in rows] == [h for h, _ in forecast_of(FORECAST).hours]
        handling = statistics.fmean(history["handling"][stage])  # what was written, not what was measured
        arrivals = expected_arrivals(FORECAST, visits[stage], history["delays"][stage])
        for row, expected in zip(rows, arrivals):
            assert row.arrivals == pytest.approx(expected)
            if expected == 0:
                assert (row.agents, row.expected_wait_s, row.within_target) == (0, 0.0, 1.0)
                continue
            staffing = servers_needed(expected / 3600, handling, wait_minutes * 60.0, probability)
            assert row.agents == math.ceil(staffing.servers / CAPACITY[stage]), (stage, expected)
            assert row.within_target >= probability
            assert row.within_target == pytest.approx(staffing.within)
            assert row.expected_wait_s == pytest.approx(staffing.mean_wait)
        # more tickets never need fewer agents; the busiest hour more than the quietest busy one (but
        # stage 2, whose tickets come an hour after their complaints, is busiest after the forecast)
        agents = [r.agents for r in sorted(rows, key=lambda r: r.arrivals)]
        assert agents == sorted(agents), (stage, agents)
        assert stage == "stage2" or agents[-1] > min(a for a in agents if a), (stage, agents)


def test_a_stricter_promise_or_a_shorter_wait_never_needs_fewer_agents(history: dict) -> None:
    measured = measure(SINCE, UNTIL)

    def peaks(probability: float, minutes: float) -> list[int]:
        plan = make_plan(forecast_of([200.0]), measured, target_wait=timedelta(minutes=minutes),
                         probability=probability)
        return [plan.peak(stage) for stage in STAGES]

    loose, strict, quick = peaks(0.8, 5), peaks(0.999, 5), peaks(0.8, 0.1)
    assert all(s >= l for s, l in zip(strict, loose)) and strict != loose
    assert all(q >= l for q, l in zip(quick, loose)) and quick != loose


def test_the_plan_states_its_inputs(history: dict) -> None:
    measured = measure(SINCE, UNTIL)
    plan = make_plan(forecast_of([10.0]), measured, target_wait=timedelta(minutes=10), probability=0.8,
                     days_of_history=3)
    data = plan.as_json()
    assert data["model"] == "erlang_c" and data["target_wait_seconds"] == 600 and data["probability"] == 0.8
    assert data["forecast"] == "test forecast" and data["inputs"]["forecast_days"] == 3
    assert data["inputs"]["window"]["complaints"] == 60
    stages = data["inputs"]["stages"]
    assert {s: stages[s]["handling_samples"] for s in STAGES} == {"stage1": 60, "stage2": 20, "stage3": 60,
                                                                   "stage4": 60}
    assert stages["stage2"]["visits_per_complaint"] == pytest.approx(1 / 3, abs=1e-4)
    for stage in STAGES:
        assert stages[stage]["handling_mean_s"] == pytest.approx(statistics.fmean(history["handling"][stage]), abs=0.05)
        assert stages[stage]["wait_mean_s"] == pytest.approx(statistics.fmean(history["waits"][stage]), abs=0.05)
        assert stages[stage]["capacity"] == CAPACITY[stage]
    assert "Erlang C" in data["inputs"]["assumptions"]
    json.dumps(data)  # all of it serializable


# -- the command ------------------------------------------------------------------------------------


@pytest.fixture
def env(app: App, tmp_path: Path) -> dict[str, str]:
    """The CLI on the `app` fixture's SQLite file (default policy: claimed within 1 h, Asia/Shanghai)."""
    return {"OP_DATABASE_URL": f"sqlite:///{tmp_path}/t.db", "OP_BROKER_URL": "memory://",
            "OP_INTAKE_URL": "memory://", "OP_POLICY": None}  # type: ignore[dict-item]


@pytest.fixture
def recent(app: App) -> dict:
    """60 complaints two days ago, 20 through stage 2 (the command measures the 28 days before now);
    what `busy_month` wrote."""
    with app.db.connection_context():
        return busy_month(floor(app), (utcnow() - timedelta(days=2)).replace(minute=0, second=0, microsecond=0),
                          complaints=60, evidence_every=3)


def plan_cli(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["plan", *args], env=env)


def test_plan_on_too_little_data_says_so_and_exits_1(env: dict[str, str], app: App) -> None:
    with app.db.connection_context():
        write_ticket(utcnow() - timedelta(hours=5), direct("agent:1", "agent:2", "agent:3", 1, 2, 1, 2, 1, 2))
    result = plan_cli(env)
    assert result.exit_code == 1, result.output
    assert "too little data" in result.output and "only 1 complaint was admitted" in result.output
    assert "stage1: 1 handled tickets" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_plan_with_a_bad_forecast_names_the_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("hour,complaints\n9,12\n10,lots\n25,3\n", encoding="utf-8")
    result = plan_cli(env, "--forecast", str(bad))
    assert result.exit_code == 1, result.output
    assert "forecast cannot be read" in result.output
    assert "bad.csv line 3:" in result.output and "'lots'" in result.output
    assert "bad.csv line 4:" in result.output and "'25'" in result.output
    assert "Traceback" not in result.output


def test_plan_json_gives_four_stages_for_each_forecast_hour_and_its_inputs(env: dict[str, str], recent: dict,
                                                                           tmp_path: Path) -> None:
    forecast = tmp_path / "tomorrow.csv"
    forecast.write_text("hour,complaints\n9,10\n10,40\n2026-12-06T12:00:00+08:00,0\n", encoding="utf-8")
    result = plan_cli(env, "--forecast", str(forecast), "--format", "json", "--day", "2026-12-06", "--wait", "10")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert len(rows) == 4 * 3
    assert {(r["stage"], r["hour"]) for r in rows} == {
        (s, h) for s in STAGES for h in ("2026-12-06T01:00:00+00:00", "2026-12-06T02:00:00+00:00",
                                         "2026-12-06T04:00:00+00:00")}
    by = {(r["stage"], r["hour"][11:13]): r for r in rows}
    # Stage 1 gets each hour's complaints in that hour (they came straight to the floor); the later
    # stages get them as the history's delays bring them: some of 10:00's reach 12:00, some land at
    # 11:00, which the forecast leaves out (not planned, and said so).
    visits = {"stage1": 1.0, "stage2": 1 / 3, "stage3": 1.0, "stage4": 1.0}
    for stage in STAGES:
        hourly = expected_arrivals([10.0, 40.0, 0.0, 0.0, 0.0, 0.0], visits[stage], recent["delays"][stage])
        assert [by[(stage, h)]["arrivals"] for h in ("01", "02", "04")] == pytest.approx(
            [hourly[0], hourly[1], hourly[3]], abs=0.006)  # the JSON rounds to 0.01
        outside = data["inputs"]["stages"][stage]["arrivals_outside_forecast_hours"]
        assert outside == pytest.approx(hourly[2] + sum(hourly[4:]), abs=0.06)
        assert 0 < by[(stage, "01")]["agents"]
    assert [by[("stage1", h)]["arrivals"] for h in ("01", "02", "04")] == [10, 40, 0]
    assert by[("stage1", "04")]["agents"] == 0 and by[("stage4", "04")]["agents"] > 0
    assert data["inputs"]["stages"]["stage1"]["arrivals_outside_forecast_hours"] == 0
    assert data["target_wait_seconds"] == 600 and data["probability"] == 0.8
    assert "tomorrow.csv" in data["forecast"]
    assert data["inputs"]["window"]["complaints"] == 60
    assert {s: data["inputs"]["stages"][s]["handling_samples"] for s in STAGES} == {
        "stage1": 60, "stage2": 20, "stage3": 60, "stage4": 60}


def test_plan_without_a_forecast_uses_the_recent_days(env: dict[str, str], recent: None) -> None:
    result = plan_cli(env, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    days = data["inputs"]["forecast_days"]  # the local days the written history spans (1 or 2, by the clock)
    assert len(data["rows"]) == 4 * 24 and days in (1, 2) and f"the {days} day(s)" in data["forecast"]
    assert data["target_wait_seconds"] == 3600  # the policy's accept promise
    # the 60 complaints written, spread over those days
    assert sum(r["arrivals"] for r in data["rows"] if r["stage"] == "stage1") == pytest.approx(60 / days, abs=0.1)


def test_plan_png_writes_a_png(env: dict[str, str], recent: None, tmp_path: Path) -> None:
    forecast = tmp_path / "f.csv"
    forecast.write_text("hour,complaints\n8,5\n9,30\n10,12\n", encoding="utf-8")
    out = tmp_path / "plan.png"
    result = plan_cli(env, "--forecast", str(forecast), "--format", "png", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert str(out) in result.output


def test_plan_table_shows_the_agents_and_what_they_rest_on(env: dict[str, str], recent: None,
                                                           tmp_path: Path) -> None:
    forecast = tmp_path / "f.csv"
    forecast.write_text("hour,complaints\n9,30\n", encoding="utf-8")
    result = plan_cli(env, "--forecast", str(forecast), "--probability", "0.9")
    assert result.exit_code == 0, result.output
    assert "Agents needed per stage and hour" in result.output and "90%" in result.output
    assert "60 complaints" in result.output and "over 20 tickets" in result.output


def test_plan_reads_a_forecast_saved_by_excel(env: dict[str, str], recent: None, tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts the file with a byte order mark the supervisor cannot see.
    forecast = tmp_path / "excel.csv"
    forecast.write_bytes("hour,complaints\r\n9,30\r\n".encode("utf-8-sig"))
    result = plan_cli(env, "--forecast", str(forecast), "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["rows"]) == 4


@pytest.mark.servers
def test_plan_on_postgresql_is_the_plan_on_sqlite(env: dict[str, str], app: App, tmp_path: Path) -> None:
    """The command against a PostgreSQL database (``OP_DATABASE_URL=postgresql://...``) holding the
    same history as a SQLite one plans the same agents, and refuses an empty one the same way."""
    from tests.integration.conftest import fresh_pg_database
    from tests.integration.conftest import make_app as make_pg_app

    start = (utcnow() - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    with app.db.connection_context():
        busy_month(floor(app), start, complaints=60, evidence_every=3)
    url = fresh_pg_database("disputes_test_plan_cli")
    pg_env = {**env, "OP_DATABASE_URL": url}
    make_pg_app(url, app.policy).db.close()  # the schema, no history yet
    empty = plan_cli(pg_env)
    assert empty.exit_code == 1 and "only 0 complaints were admitted" in empty.output, empty.output
    pg = make_pg_app(url, app.policy)  # (the command bound the models to its own connection: bind them back)
    try:
        with pg.db.connection_context():
            busy_month(floor(pg), start, complaints=60, evidence_every=3)
    finally:
        pg.db.close()
    forecast = tmp_path / "tomorrow.csv"
    forecast.write_text("hour,complaints\n9,10\n10,40\n11,25\n12,0\n", encoding="utf-8")
    args = ("--forecast", str(forecast), "--format", "json", "--day", "2026-12-06", "--wait", "10")
    on_sqlite, on_pg = plan_cli(env, *args), plan_cli(pg_env, *args)
    assert on_sqlite.exit_code == 0 and on_pg.exit_code == 0, (on_sqlite.output, on_pg.output)
    sqlite_plan, pg_plan = json.loads(on_sqlite.stdout), json.loads(on_pg.stdout)
    assert pg_plan["rows"] == sqlite_plan["rows"] and len(pg_plan["rows"]) == 16
    assert pg_plan["inputs"]["stages"] == sqlite_plan["inputs"]["stages"]
    assert pg_plan["inputs"]["window"]["complaints"] == 60
    table = plan_cli(pg_env, "--forecast", str(forecast))
    assert table.exit_code == 0 and "Agents needed per stage and hour" in table.output
    bad = tmp_path / "bad.csv"
    bad.write_text("hour,complaints\n9,12\n10,lots\n", encoding="utf-8")
    refused = plan_cli(pg_env, "--forecast", str(bad))
    assert refused.exit_code == 1 and "bad.csv line 3:" in refused.output and "'lots'" in refused.output
