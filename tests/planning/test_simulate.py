"""The simulation that checks Erlang C's answer: it agrees where Erlang C's assumptions hold, and
shows what Erlang C cannot — the backlog an hour leaves to the next."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

from planning.forecast import Forecast
from planning.measure import STAGES, Measured, StageWork
from planning.staffing import make_plan
from planning.tomorrow import checked_by_simulation

NOW = datetime(2026, 12, 5, tzinfo=timezone.utc)


def measured(mean_handling: float, samples: int = 2000) -> Measured:
    rng = random.Random(7)
    stages = {s: StageWork(s, arrivals=1000, handling=[rng.expovariate(1 / mean_handling) for _ in range(samples)],
                           capacity=1.0) for s in STAGES}
    return Measured(NOW - timedelta(days=28), NOW, 1000, Counter(), stages)


def day(per_hour) -> Forecast:
    return Forecast([(NOW + timedelta(hours=h), float(per_hour(h))) for h in range(24)], "test")


def test_on_a_steady_day_the_simulation_agrees_with_erlang_c() -> None:
    work = measured(1800)
    plan = checked_by_simulation(make_plan(day(lambda h: 20), work, target_wait=timedelta(minutes=20),
                                           probability=0.8), work)
    stage1 = [r for r in plan.rows if r.stage == "stage1"][4:20]  # past the empty start, before the end
    simulated = sum(r.simulated_within for r in stage1) / len(stage1)
    assert abs(simulated - stage1[0].within_target) < 0.05, (simulated, stage1[0].within_target)
    assert "simulation" in plan.inputs and plan.as_json()["rows"][0]["simulated_within"] is not None


def test_when_the_staff_leaves_at_six_the_simulation_shows_the_backlog_erlang_c_does_not() -> None:
    work = measured(1800)
    busy = day(lambda h: 20 if 9 <= h < 18 else 2)
    plan = checked_by_simulation(make_plan(busy, work, target_wait=timedelta(minutes=20), probability=0.8), work)
    evening = next(r for r in plan.rows if r.stage == "stage1" and r.hour == NOW + timedelta(hours=18))
    assert evening.within_target >= 0.8  # Erlang C: each hour on its own keeps the promise
    assert evening.simulated_within is not None and evening.simulated_within < 0.7  # the day's backlog does not
