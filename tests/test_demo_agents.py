"""The demo's simulated floor on its own: an agent reading what is left of the fee budget from the
desk's 422, shifts per period, stratified handling times, arrivals at an hour's rate, and an audit
trail moved onto the plan's clock (`tools.simulation.agents`, `tools.simulation.staffed`)."""
from __future__ import annotations

import math
import statistics
from datetime import timedelta

import pytest

from desk.errors import ApiError
from disputes.wiring import App
from models.audit import TicketEvent
from models.base import utcnow
from planning.measure import measure
from tests.planning.test_plan import direct, write_ticket
from tools.simulation.agents import Floor, Handling, _budget_left
from tools.simulation.staffed import Pace, poisson_arrivals, stretch, stretch_trail

# -- the fee budget an agent is told about ---------------------------------------------------------


def over_budget(**extra: object) -> dict:
    """The body of the desk's 422 as `desk.actions.check_budget` raises it."""
    return ApiError(422, "over_budget", "the complaint fee would exceed this month's budget: 1,234.56 CNY left",
                    {"amount": ["exceeds this month's complaint-fee budget: 1,234.56 CNY left"]}, **extra).body()


def test_the_budget_left_is_read_from_its_field_in_minor_units() -> None:
    # The message reads major units ("1,234.56 CNY"); the old pattern took "56" from it.
    assert _budget_left(over_budget(budget_left_minor=123456, currency="CNY")) == 123456
    assert _budget_left(over_budget(budget_left_minor=0, currency="CNY")) == 0


@pytest.mark.parametrize("extra", [{}, {"budget_left_minor": -500}, {"budget_left_minor": "123456"},
                                   {"budget_left_minor": True}, {"budget_left_minor": 12.5}])
def test_an_answer_that_does_not_say_what_is_left_leaves_nothing_to_spend(extra: dict) -> None:
    assert _budget_left(over_budget(**extra)) == 0
    assert _budget_left({}) == 0


def test_the_desk_still_sends_the_field_the_agents_read() -> None:
    import inspect

    from desk import actions
    assert "budget_left_minor=left" in inspect.getsource(actions.check_budget)


# -- shifts and handling times ------------------------------------------------------------------------


def test_agents_are_on_duty_by_the_shift_of_each_period_and_one_stays_after_the_last() -> None:
    floor = Floor({1: [2, 0, 3], 4: [0]}, period=10.0, start=100.0)
    duty = [[floor.on_duty(1, n, t) for n in (1, 2, 3)] for t in (95.0, 100.0, 109.9, 110.0, 125.0, 130.0, 999.0)]
    assert duty == [[True, True, False], [True, True, False], [True, True, False], [False, False, False],
                    [True, True, True], [True, True, True], [True, True, True]]
    assert floor.on_duty(4, 1, 100.0) is False and floor.on_duty(4, 1, 111.0) is True  # after: at least one
    assert floor.pools() == {1: 3, 4: 0}
    assert floor.until_next_period(104.0) == pytest.approx(6.0)


def test_handling_times_are_exponential_and_any_block_averages_near_the_mean() -> None:
    handling = Handling({2: 600.0, 3: 0.0}, seed=4)
    draws = [handling.draw(2) for _ in range(100 * Handling.BLOCK)]
    assert statistics.fmean(draws) == pytest.approx(600.0, rel=0.03)
    assert sum(d > 600.0 for d in draws) / len(draws) == pytest.approx(math.exp(-1), abs=0.03)  # P(X > mean)
    assert sum(d > 1800.0 for d in draws) / len(draws) == pytest.approx(math.exp(-3), abs=0.015)  # the tail
    blocks = [statistics.fmean(draws[i:i + Handling.BLOCK]) for i in range(0, len(draws), Handling.BLOCK)]
    # blocks of 20 plain exponential draws spread by 1/√20 = 22 % of the mean; stratified, by a third of that
    assert statistics.pstdev(blocks) / 600.0 < 0.1
    assert draws[:Handling.BLOCK] != sorted(draws[:Handling.BLOCK])  # shuffled within the block
    assert handling.draw(3) == 0.0 and handling.draw(1) == 0.0


def test_arrivals_come_at_each_hours_rate_and_none_in_an_empty_hour() -> None:
    pace = Pace(4.0)
    assert pace.factor == 900.0 and pace.run_seconds(600.0) == pytest.approx(0.667, abs=0.001)
    counts = [0] * 4
    for seed in range(50):
        times = poisson_arrivals([10, 0, 40, 20], pace, seed)
        assert times == sorted(times) and all(0 <= t < 16.0 for t in times)
        assert not [t for t in times if 4.0 <= t < 8.0]
        for t in times:
            counts[int(t // 4.0)] += 1
    assert [c / 50 for c in counts] == pytest.approx([10, 0, 40, 20], rel=0.1)


# -- the audit trail on the plan's clock ------------------------------------------------------------


def test_a_fast_run_is_stretched_onto_the_plans_clock(db_app: App) -> None:
    origin = utcnow().replace(microsecond=0)
    before = write_ticket(origin - timedelta(hours=3), direct("agent:1", "agent:3", "agent:4", 0, 0, 0, 0, 0, 0))
    # a ticket of the run: taken over 1 s after reaching the floor, decided 2 s later (run seconds)
    write_ticket(origin + timedelta(seconds=1), direct("agent:1", "agent:3", "agent:4", 1 / 60, 2 / 60, 0, 0, 0, 0))
    end = origin + timedelta(seconds=10)
    assert stretch(end, end, 900.0) == end and stretch(origin, end, 900.0) == end - timedelta(hours=2.5)
    assert stretch_trail(origin, end, 900.0) == 7
    untouched = [TicketEvent.at.python_value(at) for (at,) in
                 TicketEvent.select(TicketEvent.at).where(TicketEvent.ticket == before).tuples()]
    assert untouched == [origin - timedelta(hours=3)] * 7  # written before the run: left alone
    work = measure(stretch(origin, end, 900.0), end).stages["stage1"]  # the run alone
    assert work.waits == [900.0] and work.handling == [1800.0]  # 15 and 30 minutes of the plan
    assert work.waited_from == [end - timedelta(seconds=9 * 900)]  # 1 s into a run of 10: 2 h 15 min before its end
