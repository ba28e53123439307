"""A supervisor's forecast file (``disputes plan --forecast FILE``): what is read from a good one,
and every problem of a bad one reported at once, each with its line."""
from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from planning.forecast import ForecastError, read_forecast, recent_hours

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the default policy calendar's zone (UTC+8, no DST)
DAY = date(2026, 12, 6)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def problems_of(text: str, *, zone: ZoneInfo = SHANGHAI, day: date = DAY) -> list[str]:
    with pytest.raises(ForecastError) as caught:
        read_forecast(text, day, zone, "tomorrow.csv")
    assert str(caught.value) == "\n".join(caught.value.problems)  # the message carries every problem
    return caught.value.problems


# -- a good file --------------------------------------------------------------------------------


def test_hours_of_the_day_fall_on_the_planned_day_in_the_policy_zone() -> None:
    forecast = read_forecast("hour,complaints\n0,2\n9,40\n23,1.5\n", DAY, SHANGHAI, "tomorrow.csv")
    assert forecast.hours == [(utc(2026, 12, 5, 16), 2.0), (utc(2026, 12, 6, 1), 40.0), (utc(2026, 12, 6, 15), 1.5)]
    assert "tomorrow.csv" in forecast.source and "3 hours" in forecast.source


def test_iso_hours_with_their_zones_and_hours_of_the_day_mix() -> None:
    text = ("hour,complaints\r\n"
            "10,12\r\n"
            "2026-12-06T11:00:00+08:00,20\r\n"  # 03:00 UTC
            "\r\n"  # blank lines are skipped
            "2026-12-06T04:00:00Z,30\r\n"  # 12:00 in Shanghai
            "2026-12-05T22:00:00-07:00,7\r\n")  # 05:00 UTC = 13:00 in Shanghai
    forecast = read_forecast(text, DAY, SHANGHAI, "f.csv")
    assert forecast.hours == [(utc(2026, 12, 6, 2), 12.0), (utc(2026, 12, 6, 3), 20.0),
                              (utc(2026, 12, 6, 4), 30.0), (utc(2026, 12, 6, 5), 7.0)]


def test_hours_come_back_in_time_order_whatever_the_file_order() -> None:
    forecast = read_forecast("hour,complaints\n17,5\n8,1\n12,3\n", DAY, SHANGHAI)
    assert [count for _, count in forecast.hours] == [1.0, 3.0, 5.0]


def test_a_header_with_capitals_and_spaces_and_cells_with_spaces_are_accepted() -> None:
    forecast = read_forecast("Hour , Complaints\n 9 , 10 \n", DAY, SHANGHAI)
    assert forecast.hours == [(utc(2026, 12, 6, 1), 10.0)]


def test_zero_complaints_is_a_forecast() -> None:
    forecast = read_forecast("hour,complaints\n3,0\n", DAY, SHANGHAI)
    assert forecast.hours == [(utc(2026, 12, 5, 19), 0.0)]


# -- a bad file -----------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_each_with_its_line() -> None:
    text = ("hour,complaints\n"  # 1
            "9,ten\n"  # 2: not a number
            "10,-3\n"  # 3: negative
            "24,5\n"  # 4: no hour 24
            "2026-12-06T12:00:00,4\n"  # 5: ISO without a zone
            "11,2\n"  # 6: fine
            "11,3\n"  # 7: hour 11 again
            "12,1,7\n"  # 8: three values
            "13,4\n")  # 9: fine
    problems = problems_of(text)
    assert len(problems) == 6, problems
    by_line = {line: next(p for p in problems if f"line {line}:" in p) for line in (2, 3, 4, 5, 7, 8)}
    assert "tomorrow.csv" in by_line[2] and "ten" in by_line[2] and "number" in by_line[2]
    assert "-3" in by_line[3] and "at least 0" in by_line[3]
    assert "'24'" in by_line[4] and "0-23" in by_line[4]
    assert "no zone" in by_line[5] and "+08:00" in by_line[5]  # shows how to write it
    assert "11" in by_line[7] and "twice" in by_line[7]
    assert "2 values" in by_line[8] and "found 3" in by_line[8]
    assert not any(f"line {line}:" in p for p in problems for line in (1, 6, 9))


def test_the_same_hour_written_two_ways_is_a_repeat() -> None:
    problems = problems_of("hour,complaints\n9,3\n2026-12-06T09:00:00+08:00,4\n")
    assert len(problems) == 1 and "line 3:" in problems[0] and "twice" in problems[0]


def test_a_bad_hour_and_a_bad_count_on_one_line_are_both_reported() -> None:
    problems = problems_of("hour,complaints\n25,-1\n")
    assert len(problems) == 2 and all("line 2:" in p for p in problems)


@pytest.mark.parametrize("count", ["nan", "inf", "1e400"])
def test_counts_that_are_not_finite_are_refused(count: str) -> None:
    problems = problems_of(f"hour,complaints\n9,{count}\n")
    assert len(problems) == 1 and "line 2:" in problems[0] and count in problems[0]


def test_a_time_that_does_not_start_an_hour_is_refused() -> None:
    problems = problems_of("hour,complaints\n2026-12-06T09:30:00+08:00,4\n")
    assert len(problems) == 1 and "line 2:" in problems[0] and "does not start an hour" in problems[0]


@pytest.mark.parametrize("header", ["hour;complaints", "time,complaints", "hour,complaints,notes", "hour"])
def test_a_wrong_header_is_line_one(header: str) -> None:
    problems = problems_of(f"{header}\n9,3\n")
    assert len(problems) == 1 and "line 1:" in problems[0] and "hour,complaints" in problems[0]
    assert repr(header) in problems[0]  # says what it found


def test_an_empty_file_says_so() -> None:
    problems = problems_of("")
    assert len(problems) == 1 and "line 1:" in problems[0] and "empty" in problems[0]


def test_a_header_without_hours_forecasts_nothing() -> None:
    problems = problems_of("hour,complaints\n\n")
    assert problems == ["tomorrow.csv: no hour is forecast"]


def test_a_blank_line_does_not_shift_the_line_numbers() -> None:
    problems = problems_of("hour,complaints\n\n\n9,x\n")
    assert len(problems) == 1 and "line 4:" in problems[0]


@pytest.mark.parametrize("hour", ["²", "①"])
def test_a_digit_that_is_not_a_number_is_a_problem_not_a_crash(hour: str) -> None:
    # str.isdigit() accepts superscripts and circled numbers, int() does not: this must still be a
    # ForecastError with its line (the CLI turns only that into a message; anything else is a traceback).
    problems = problems_of(f"hour,complaints\n{hour},3\n")
    assert len(problems) == 1 and "line 2:" in problems[0]


def test_the_missing_hour_of_a_spring_forward_day_is_not_called_a_repeat() -> None:
    # With a policy zone that has DST, 02:00 does not exist on 2026-03-29 in Berlin; a file listing
    # 2 and 3 must not be told that hour 3 (written once) "is given twice".
    berlin = ZoneInfo("Europe/Berlin")
    try:
        read_forecast("hour,complaints\n1,1\n2,1\n3,1\n", date(2026, 3, 29), berlin, "f.csv")
    except ForecastError as error:
        assert not any("line 4:" in p and "twice" in p for p in error.problems), error.problems


# -- the default forecast: the recent past ---------------------------------------------------------


def test_recent_hours_average_each_local_hour_over_the_days_with_complaints() -> None:
    until = utc(2026, 12, 5, 12)
    by_hour: Counter[datetime] = Counter({
        utc(2026, 12, 1, 1): 3,  # 09:00 Shanghai, day 1
        utc(2026, 12, 3, 1): 5,  # 09:00 Shanghai, day 2
        utc(2026, 12, 3, 6): 4,  # 14:00 Shanghai, day 2
        utc(2026, 12, 2, 16): 2,  # 00:00 Shanghai on 12-03 (local date counts): still day 2
        utc(2026, 10, 1, 1): 100,  # more than 28 days before: ignored
    })
    forecast, days = recent_hours(by_hour, DAY, SHANGHAI, until)
    assert days == 2
    assert len(forecast.hours) == 24
    assert forecast.hours[0][0] == utc(2026, 12, 5, 16)  # 00:00 on the planned day in Shanghai
    per_local_hour = {start.astimezone(SHANGHAI).hour: count for start, count in forecast.hours}
    assert per_local_hour[9] == 4.0 and per_local_hour[14] == 2.0 and per_local_hour[0] == 1.0
    assert sum(per_local_hour.values()) == pytest.approx((3 + 5 + 4 + 2) / 2)
    assert "2 day(s)" in forecast.source


def test_recent_hours_without_history_forecast_nothing() -> None:
    forecast, days = recent_hours(Counter(), DAY, SHANGHAI, utc(2026, 12, 5))
    assert days == 0 and len(forecast.hours) == 24 and all(count == 0 for _, count in forecast.hours)


def test_recent_hours_window_can_be_shortened() -> None:
    until = utc(2026, 12, 5, 12)
    by_hour: Counter[datetime] = Counter({until - timedelta(days=10): 8, until - timedelta(days=1): 2})
    forecast, days = recent_hours(by_hour, DAY, SHANGHAI, until, days=7)
    assert days == 1 and sum(count for _, count in forecast.hours) == 2
