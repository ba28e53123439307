"""`disputes plan` checked by the demo's simulation (issue 16): the real system, embedded, works a
day of a given arrival curve with the agents the plan recommends per stage and hour and keeps the
plan's promise — tickets claimed within the target wait, for the stated share of them — at every
stage; with one agent fewer at the tightest stage, that stage misses it.

The steps, as a supervisor would take them:

1. *Yesterday*: the demo's simulation (`tools.simulation.staffed.run_day`) runs a history: a
   well-staffed floor, agents holding each ticket for an exponential time (`WORLD_HANDLING`), the
   demo's merchants, buyers, logistics and deadlines. Its audit trail is put on the plan's clock.
2. *The plan*: `planning.tomorrow.plan_for` — what ``disputes plan --forecast FILE --wait 10``
   runs — measures that history (visits per complaint, delays from admission to each stage,
   handling times) and recommends agents per stage and hour for the forecast curve. The curve ends
   with an hour without complaints, so that the plan staffs the work the day leaves over.
3. *Tomorrow*: the day of that curve (Poisson arrivals at each hour's count) twice, at once, each
   in its own process: with the plan's staffing, and with one agent fewer in every hour at the
   tightest stage — where, by the plan's own Erlang C, one agent fewer costs the most. Agents hold
   tickets for exponential times with the means the plan measured: what the plan assumes. After
   the planned hours the last hour's staffing (at least one agent) stays until each ticket of the
   day was claimed or has waited past the target.
4. *The check*: per stage, of the tickets that reached it during the planned hours, the share
   claimed within the target wait (never claimed counts as late). With the plan's staffing: at
   least the plan's probability less the tolerance. With one fewer at the tightest stage: below the
   probability, and below the plan's staffing's share by more than both tolerances together.

The tolerance is the sampling error of a share measured on n tickets, z·√(p(1−p)/n) with z = 2.33
(one-sided 1 %). Waits in one queue are correlated, so a day's share varies more than that; the
figures leave far more room (in the runs made when this was written: 0.93-1.00 at every stage
where 0.8 was promised, 0.31-0.54 at stage 4 with one agent fewer).

Why the tightest stage is stage 4 (`WORLD_HANDLING`: 3 minutes a ticket): a stage of two or three
agents loses a third or half of its hands with one agent; a stage of six loses a sixth, and the
floor's claim order (tickets due soonest first, so the simple ones before the complex) keeps most
of a moderately overloaded stage's tickets within a target anyway.

Time runs `PACE.factor` times fast (`tools.simulation.staffed.Pace`), so a machine busy with
something else stretches waits and handling times: each run checks that the agents' handling came
out as the plan assumed, and skips, saying so, when the machine was too busy for the day to test
the plan.

The figures: ``pytest tests/planning/test_validation.py -s`` (``-m slow``: a longer, busier day,
and the policy's own accept promise of an hour).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from disputes.settings import Settings
from disputes.wiring import build_app
from models.base import utcnow
from planning.erlang import chance_within
from planning.measure import STAGES
from planning.staffing import Plan
from planning.tomorrow import plan_for
from policy import Policy, policy_from_dict
from tests.conftest import fast_policy_dict
from tools.simulation.staffed import Day, Pace, run_day, run_days

#: The run's clock: 4 seconds stand for an hour (the world's 1-second deadlines for 15 minutes,
#: its parties' answers of 0.1-1.2 s for 1.5-18 minutes).
PACE = Pace(4.0)
#: The history's agents: mean handling time per stage, seconds (stage 4 only checks a refund).
WORLD_HANDLING = {1: 600.0, 2: 720.0, 3: 900.0, 4: 180.0}
#: Yesterday: two hours of 30 complaints, eight agents a stage.
HISTORY_CURVE = [30, 30]
HISTORY_STAFF = 8
DAY = date(2026, 12, 7)
PROBABILITY = 0.8
#: One-sided 99 % quantile of the normal distribution.
Z = 2.33
#: A run whose handling times came out further than this from the plan's was disturbed.
DISTURBED = 0.25


def policy() -> Policy:
    """The demo's world on the tests' fast policy: every deadline 1 s (15 minutes of the plan)."""
    return policy_from_dict(fast_policy_dict())


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.db"
    day = run_day(path, policy(), per_hour=HISTORY_CURVE, shifts={s: [HISTORY_STAFF] for s in (1, 2, 3, 4)},
                  handling=WORLD_HANDLING, pace=PACE, seed=3)
    assert day.finished, "the history did not finish"
    return path


def plan_from(history: Path, curve: list[float], target: timedelta) -> Plan:
    """``disputes plan --forecast`` on the history: the curve as hours 9, 10... of `DAY`."""
    forecast = "hour,complaints\n" + "".join(f"{9 + i},{count:g}\n" for i, count in enumerate(curve))
    app = build_app(Settings(database_url=f"sqlite:///{history}", broker_url="memory://", intake_url="memory://"),
                    policy=policy())
    try:
        with app.db.connection_context():
            return plan_for(app.policy, utcnow(), forecast_text=forecast, forecast_name="curve",
                            day=DAY, probability=PROBABILITY, target_wait=target)
    finally:
        app.db.close()


def shifts_of(plan: Plan) -> dict[int, list[int]]:
    return {int(stage[-1]): [r.agents for r in sorted((r for r in plan.rows if r.stage == stage),
                                                       key=lambda r: r.hour)] for stage in STAGES}


def handling_of(plan: Plan) -> dict[int, float]:
    return {int(stage[-1]): plan.inputs["stages"][stage]["handling_mean_s"] for stage in STAGES}


def erlang_day(plan: Plan, stage: str, fewer: int = 0) -> float:
    """The plan's own answer for the stage's day: Erlang C's share within the target, hour by hour,
    weighted by the hour's arrivals, with `fewer` agents less in every hour."""
    handling = plan.inputs["stages"][stage]["handling_mean_s"]
    capacity = max(1.0, plan.inputs["stages"][stage]["capacity"])
    rows = [r for r in plan.rows if r.stage == stage and r.arrivals > 0]
    within = sum(r.arrivals * chance_within(int(max(0, r.agents - fewer) * capacity), r.arrivals * handling / 3600,
                                            handling, plan.target_wait_s) for r in rows)
    return within / sum(r.arrivals for r in rows)


def tightest(plan: Plan) -> str:
    """The stage where one agent fewer costs the most, by the plan's Erlang C."""
    return min(STAGES, key=lambda stage: erlang_day(plan, stage, fewer=1))


def tolerance(n: int) -> float:
    return Z * math.sqrt(PROBABILITY * (1 - PROBABILITY) / n)


@dataclass
class Validation:
    curve: list[float]
    plan: Plan
    tightest: str
    recommended: Day
    fewer: Day

    @property
    def hours(self) -> int:
        return len(self.curve)

    def attained(self, day: Day, stage: str) -> tuple[int, int]:
        return day.attainment(stage, self.plan.target_wait_s, self.hours)

    def disturbed(self) -> list[str]:
        """Stages whose handling times in a run strayed from the plan's (a machine too busy)."""
        planned = handling_of(self.plan)
        return [f"{label} {stage}: handled in {day.measured.stages[stage].mean_handling:.0f} s on average, the plan "
                f"assumed {planned[int(stage[-1])]:.0f} s"
                for label, day in (("recommended", self.recommended), ("one fewer", self.fewer)) for stage in STAGES
                if day.measured.stages[stage].handling and abs(day.measured.stages[stage].mean_handling
                                                              / planned[int(stage[-1])] - 1) > DISTURBED]

    def figures(self) -> str:
        """What the runs found, per stage, beside what Erlang C (the plan's model) promised."""
        shifts = shifts_of(self.plan)
        head = (f"curve {self.curve} (hours 9-{8 + self.hours}); target: claimed within "
                f"{self.plan.target_wait_s / 60:g} min for {PROBABILITY:.0%}; runs of {self.recommended.elapsed:.0f} s "
                f"and {self.fewer.elapsed:.0f} s at {PACE.hour:g} s an hour; one agent fewer at {self.tightest}")
        lines = [head]
        for stage in STAGES:
            k, n = self.attained(self.recommended, stage)
            planned = sum(r.arrivals for r in self.plan.rows if r.stage == stage)
            handled = self.recommended.measured.stages[stage].mean_handling
            lines.append(f"  {stage}: agents {shifts[int(stage[-1])]}: {k}/{n} = {k / n:.3f} within "
                         f"(Erlang C {erlang_day(self.plan, stage):.3f}; tolerance {tolerance(n):.3f}); "
                         f"{planned:.0f} tickets planned, handling {handled:.0f} s against the plan's "
                         f"{handling_of(self.plan)[int(stage[-1])]:.0f} s")
        k, n = self.attained(self.fewer, self.tightest)
        lines.append(f"  {self.tightest} with one agent fewer, {[max(0, a - 1) for a in shifts[int(self.tightest[-1])]]}: "
                     f"{k}/{n} = {k / n:.3f} within (Erlang C {erlang_day(self.plan, self.tightest, 1):.3f})")
        return "\n".join(lines)


def validate(history: Path, workdir: Path, curve: list[float], target: timedelta, seed: int,
             together: bool = True) -> Validation:
    """Plan the curve from the history, then run the day with the plan's staffing and with one agent
    fewer at the tightest stage — `together` (two processes at once) or one after the other."""
    plan = plan_from(history, curve, target)
    stage = tightest(plan)
    shifts = shifts_of(plan)
    fewer = {**shifts, int(stage[-1]): [max(0, a - 1) for a in shifts[int(stage[-1])]]}
    common = {"policy": policy(), "per_hour": curve, "handling": handling_of(plan), "pace": PACE, "seed": seed,
              "complete": False, "target": plan.target_wait_s}
    jobs = [{**common, "database": workdir / "recommended.db", "shifts": shifts},
            {**common, "database": workdir / "fewer.db", "shifts": fewer}]
    recommended, one_fewer = run_days(jobs) if together else [run_day(**job) for job in jobs]
    return Validation(list(curve), plan, stage, recommended, one_fewer)


def check(validation: Validation) -> None:
    figures = validation.figures()
    print("\n" + figures)
    assert validation.recommended.finished and validation.fewer.finished, figures
    disturbed = validation.disturbed()
    if disturbed:
        pytest.skip("the machine was too busy for the simulated day to test the plan: " + "; ".join(disturbed))
    for stage in STAGES:
        k, n = validation.attained(validation.recommended, stage)
        assert n >= 30, (stage, n, figures)
        assert k / n >= PROBABILITY - tolerance(n), figures
    k, n = validation.attained(validation.recommended, validation.tightest)
    k1, n1 = validation.attained(validation.fewer, validation.tightest)
    assert k1 / n1 < PROBABILITY, figures
    assert k / n - k1 / n1 > math.hypot(tolerance(n), tolerance(n1)), figures


# -- the validation -----------------------------------------------------------------------------


def test_the_plans_staffing_keeps_the_promise_and_one_agent_fewer_at_the_tightest_stage_misses_it(
        history: Path, tmp_path: Path) -> None:
    # Six hours: a morning ramp, a plateau, the evening, and an hour for what the day leaves over.
    validation = validate(history, tmp_path, [10, 25, 25, 25, 10, 0], timedelta(minutes=10), seed=5)
    check(validation)


@pytest.mark.slow
def test_on_a_longer_busier_day_too(history: Path, tmp_path: Path) -> None:
    validation = validate(history, tmp_path, [10, 20, 30, 40, 40, 30, 20, 10, 0, 0], timedelta(minutes=10), seed=11,
                          together=False)
    check(validation)


@pytest.mark.slow
def test_at_the_policys_accept_promise_of_an_hour_too(history: Path, tmp_path: Path) -> None:
    validation = validate(history, tmp_path, [10, 20, 30, 40, 40, 30, 20, 10, 0, 0],
                          timedelta(seconds=policy().sla.accept.seconds()), seed=13, together=False)
    check(validation)
