"""Durations and the working calendar: what a "3wd" deadline means on the floor."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.calendar import Calendar
from policy.durations import Duration, parse_duration
from policy import load_policy

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Mon–Fri 09:00–18:00 in Shanghai, no holidays: the plain case.
PLAIN = Calendar("Asia/Shanghai", (1, 2, 3, 4, 5), (time(9), time(18)))


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


@pytest.mark.parametrize("text, amount, unit, seconds", [
    ("90s", 90, "s", 90), ("30m", 30, "m", 1800), ("48h", 48, "h", 172800),
    ("3d", 3, "d", 259200), ("3wd", 3, "wd", 259200), ("0s", 0, "s", 0),
])
def test_a_duration_keeps_the_unit_it_was_written_in(text: str, amount: int, unit: str, seconds: int) -> None:
    duration = parse_duration(text)
    assert (duration.amount, duration.unit) == (amount, unit)
    assert str(duration) == text
    assert duration.seconds() == seconds


@pytest.mark.parametrize("text", ["3x", "", "h", "-1h", "1.5h", "3 h", "3H", "３h", "3wdd"])
def test_text_that_is_not_a_duration_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_duration(text)
    assert str(error.value) == f"{text!r} is not a duration (use 90s, 30m, 48h, 3d or 3wd)"


def test_a_non_string_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(48)  # type: ignore[arg-type]


def test_a_duration_refuses_an_unknown_unit_or_a_negative_amount() -> None:
    with pytest.raises(ValueError):
        Duration(3, "y")
    with pytest.raises(ValueError):
        Duration(-1, "h")


def test_elapsed_units_add_plain_time_and_answer_in_utc() -> None:
    start = local(2026, 3, 6, 17, 0)
    end = parse_duration("48h").after(start, PLAIN)
    assert end.tzinfo == timezone.utc
    assert end == start + timedelta(hours=48)
    assert parse_duration("90s").after(start) == start + timedelta(seconds=90)
    assert parse_duration("3d").after(start) == start + timedelta(days=3)


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_duration("1h").after(datetime(2026, 3, 6, 17), PLAIN)


def test_working_days_need_a_calendar() -> None:
    with pytest.raises(ValueError, match="calendar"):
        parse_duration("1wd").after(local(2026, 3, 6, 17))


def test_three_working_days_from_friday_afternoon_end_on_wednesday_afternoon() -> None:
    end = parse_duration("3wd").after(local(2026, 3, 6, 17, 0), PLAIN)  # a Friday
    assert end == local(2026, 3, 11, 17, 0)
    assert end.tzinfo == timezone.utc


def test_a_start_given_in_another_zone_counts_in_the_calendar_zone() -> None:
    friday_9_utc = datetime(2026, 3, 6, 9, 0, tzinfo=timezone.utc)  # 17:00 in Shanghai
    assert parse_duration("3wd").after(friday_9_utc, PLAIN) == local(2026, 3, 11, 17, 0)


def test_a_start_on_a_day_off_counts_from_the_next_working_day_start() -> None:
    saturday = local(2026, 3, 7, 11, 30)
    assert parse_duration("1wd").after(saturday, PLAIN) == local(2026, 3, 10, 9, 0)
    assert parse_duration("0wd").after(saturday, PLAIN) == local(2026, 3, 9, 9, 0)


def test_a_start_after_hours_counts_from_the_next_working_day_start() -> None:
    friday_evening = local(2026, 3, 6, 20, 0)
    assert parse_duration("1wd").after(friday_evening, PLAIN) == local(2026, 3, 10, 9, 0)


def test_a_start_before_hours_counts_from_that_days_start() -> None:
    monday_early = local(2026, 3, 9, 7, 0)
    assert parse_duration("1wd").after(monday_early, PLAIN) == local(2026, 3, 10, 9, 0)


def test_working_days_skip_holidays() -> None:
    calendar = Calendar("Asia/Shanghai", (1, 2, 3, 4, 5), (time(9), time(18)),
                        holidays=frozenset({date(2026, 3, 9)}))  # that Monday off
    assert parse_duration("1wd").after(local(2026, 3, 6, 17, 0), calendar) == local(2026, 3, 10, 17, 0)


def test_the_default_calendar_skips_national_day_and_works_the_make_up_saturday() -> None:
    calendar = load_policy().calendar
    eve = local(2026, 9, 30, 10, 0)  # Wednesday before 国庆 (Oct 1–7)
    assert parse_duration("1wd").after(eve, calendar) == local(2026, 10, 8, 10, 0)
    assert parse_duration("2wd").after(eve, calendar) == local(2026, 10, 9, 10, 0)
    assert parse_duration("3wd").after(eve, calendar) == local(2026, 10, 10, 10, 0)  # 调休 Saturday
    assert parse_duration("4wd").after(eve, calendar) == local(2026, 10, 12, 10, 0)


def test_is_working_day_knows_weekends_holidays_and_make_up_days() -> None:
    calendar = load_policy().calendar
    assert calendar.is_working_day(date(2026, 3, 6))        # a Friday
    assert not calendar.is_working_day(date(2026, 3, 7))    # a Saturday
    assert not calendar.is_working_day(date(2026, 10, 1))   # National Day
    assert calendar.is_working_day(date(2026, 2, 14))       # make-up Saturday


def test_a_calendar_without_working_days_is_refused() -> None:
    with pytest.raises(ValueError):
        Calendar("Asia/Shanghai", (), (time(9), time(18)))


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2025, 12, 1), max_value=datetime(2027, 11, 30),
                       timezones=st.just(timezone.utc)),
    days=st.integers(min_value=1, max_value=15),
)
def test_working_days_always_land_on_working_time_and_move_forward(start: datetime, days: int) -> None:
    calendar = load_policy().calendar
    end = parse_duration(f"{days}wd").after(start, calendar)
    later = parse_duration(f"{days + 1}wd").after(start, calendar)
    end_local = end.astimezone(SHANGHAI)
    assert calendar.is_working_day(end_local.date())
    assert time(9) <= end_local.time() < time(18)
    assert start < end < later
    assert end - start >= timedelta(days=days)
