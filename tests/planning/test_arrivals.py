"""When each stage's work arrives (`planning.arrivals`): the forecast's complaints moved later by the
measured delays, with the days before the forecast like its first and what lands outside its hours
counted."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from planning.arrivals import delay_shares, stage_arrivals

NINE = datetime(2026, 12, 7, 1, tzinfo=UTC)  # 09:00 in Shanghai


def hours(counts: list[float], start: datetime = NINE) -> list[tuple[datetime, float]]:
    return [(start + timedelta(hours=i), c) for i, c in enumerate(counts)]


def test_no_delay_measured_means_the_complaints_own_hour() -> None:
    assert delay_shares([]) == [1.0]
    assert delay_shares([0.0, 0.0]) == [1.0]
    arrivals, outside = stage_arrivals(hours([10, 40, 0]), 0.5, [1.0])
    assert arrivals == [5.0, 20.0, 0.0] and outside == 0.0


def test_a_delay_splits_each_ticket_over_the_two_hours_it_can_fall_in() -> None:
    # 2 h 15 min: a complaint at a uniform moment of its hour arrives 2 or 3 hours later, 3:1.
    assert delay_shares([2.25 * 3600]) == pytest.approx([0.0, 0.0, 0.75, 0.25])
    # two tickets: half an hour and a whole hour later
    assert delay_shares([1800.0, 3600.0]) == pytest.approx([0.25, 0.75])
    assert sum(delay_shares([17.0, 5000.0, 12345.0, 99999.0])) == pytest.approx(1.0)
    assert delay_shares([-5.0]) == [1.0]  # a clock a little off is no delay, not a negative one


def test_later_stages_are_busy_later_and_what_falls_after_the_forecast_is_said() -> None:
    shares = delay_shares([2.25 * 3600])
    arrivals, outside = stage_arrivals(hours([10, 20, 0, 0]), 1.0, shares)
    assert arrivals == pytest.approx([0.0, 0.0, 7.5, 2.5 + 15.0])
    assert outside == pytest.approx(5.0)  # a quarter of 11:00's complaints arrive at 14:00


def test_hours_left_out_of_the_forecast_are_gaps_where_work_is_not_planned() -> None:
    forecast = [(NINE, 10.0), (NINE + timedelta(hours=1), 40.0), (NINE + timedelta(hours=3), 0.0)]
    arrivals, outside = stage_arrivals(forecast, 1.0, [0.0, 0.5, 0.5])
    assert arrivals == pytest.approx([0.0, 5.0, 20.0])  # 12:00 gets half of 10:00's, 11:00 is not a row
    assert outside == pytest.approx(5.0 + 20.0)  # half of 09:00's and of 10:00's land at 11:00


def test_delays_of_days_bring_the_days_before_the_forecast_like_its_first() -> None:
    # Every ticket comes back exactly three days after its complaint (evidence awaited 72 hours):
    # tomorrow's arrivals are the complaints of three days before, which looked like tomorrow's.
    day = [float(h % 5) for h in range(24)]
    shares = delay_shares([72 * 3600.0])
    arrivals, outside = stage_arrivals(hours(day), 0.5, shares)
    assert arrivals == pytest.approx([c * 0.5 for c in day])
    assert outside == pytest.approx(sum(day) * 0.5)  # tomorrow's own come back after it
    # 25 hours: each hour's tickets come in the next hour of the next day; 09:00 gets the 08:00
    # complaints of two days before (the forecast's last hour, 08:00 the next morning)
    arrivals, _ = stage_arrivals(hours(day), 1.0, delay_shares([25 * 3600.0]))
    assert arrivals == pytest.approx([day[-1]] + day[:-1])


def test_a_forecast_shorter_than_a_day_brings_nothing_from_hours_it_does_not_have() -> None:
    arrivals, outside = stage_arrivals(hours([10, 10]), 1.0, delay_shares([20 * 3600.0]))
    assert arrivals == [0.0, 0.0] and outside == pytest.approx(20.0)


def test_no_forecast_no_arrivals() -> None:
    assert stage_arrivals([], 1.0, [1.0]) == ([], 0.0)
