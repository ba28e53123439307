"""Arrivals per hour: a supervisor's forecast file, or the same hours of the recent past.

A forecast file is CSV with a header ``hour,complaints``: ``hour`` is an hour of the planned day
(0-23, in the policy calendar's zone) or an ISO 8601 time with its zone; ``complaints`` a number
of complaints expected in that hour (not negative). Every problem is reported with its line.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo


class ForecastError(ValueError):
    """A forecast file that cannot be read: every problem, each naming its line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Forecast:
    """Complaints expected per hour (UTC hour starts, in order), and where the figures come from."""

    hours: list[tuple[datetime, float]]
    source: str


def read_forecast(text: str, day: date, zone: ZoneInfo, name: str = "forecast") -> Forecast:
    """Parse a forecast file's text; hours given as 0-23 fall on `day` in `zone`."""
    problems: list[str] = []
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))  # Excel's "CSV UTF-8" starts with a BOM
    if not rows or [cell.strip().lower() for cell in rows[0]] != ["hour", "complaints"]:
        raise ForecastError([f"{name} line 1: the header must be 'hour,complaints'"
                             + (f", not {','.join(rows[0])!r}" if rows else " (the file is empty)")])
    hours: dict[datetime, float] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            problems.append(f"{name} line {number}: expected 2 values (hour,complaints), found {len(row)}")
            continue
        start, problem = _hour(row[0].strip(), day, zone)
        count, count_problem = _count(row[1].strip())
        for found in (problem, count_problem):
            if found:
                problems.append(f"{name} line {number}: {found}")
        if start is None or count is None:
            continue
        if start in hours:
            problems.append(f"{name} line {number}: hour {row[0].strip()} is given twice")
            continue
        hours[start] = count
    if not hours and not problems:
        problems.append(f"{name}: no hour is forecast")
    if problems:
        raise ForecastError(problems)
    return Forecast(sorted(hours.items()), f"{name} ({len(hours)} hours)")


def _hour(text: str, day: date, zone: ZoneInfo) -> tuple[datetime | None, str | None]:
    if re.fullmatch(r"\d{1,2}", text, re.ASCII):
        hour = int(text)
        if not 0 <= hour <= 23:
            return None, f"hour must be 0-23 or an ISO 8601 time with its zone, not {text!r}"
        start = datetime.combine(day, time(hour), zone).astimezone(timezone.utc)
        if start.astimezone(zone).hour != hour:  # the clocks skipped it (daylight saving starts)
            return None, f"hour {hour} does not exist on {day} in {zone.key}: the clocks moved forward"
        return start, None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None, f"hour must be 0-23 or an ISO 8601 time with its zone, not {text!r}"
    if moment.tzinfo is None:
        return None, f"the time {text!r} has no zone (write it as 2026-12-06T09:00:00+08:00)"
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
        return None, f"the time {text!r} does not start an hour"
    return moment.astimezone(timezone.utc), None


def _count(text: str) -> tuple[float | None, str | None]:
    try:
        count = float(text)
    except ValueError:
        return None, f"complaints must be a number, not {text!r}"
    if not math.isfinite(count) or count < 0:
        return None, f"complaints must be a number of at least 0, not {text!r}"
    return count, None


def recent_hours(by_hour: Counter[datetime], day: date, zone: ZoneInfo, until: datetime,
                 days: int = 28) -> tuple[Forecast, int]:
    """Tomorrow (`day`) forecast as the mean of each local hour over the recent days that had
    complaints (at most `days`, the last four weeks by default); also how many days it rests on."""
    first = until - timedelta(days=days)
    seen_days = {start.astimezone(zone).date() for start, count in by_hour.items() if start >= first and count}
    per_hour: Counter[int] = Counter()
    for start, count in by_hour.items():
        if start >= first:
            per_hour[start.astimezone(zone).hour] += count
    spread = max(1, len(seen_days))
    hours = [(datetime.combine(day, time(hour), zone).astimezone(timezone.utc), per_hour[hour] / spread)
             for hour in range(24)]
    return Forecast(hours, f"the mean of each hour over the {len(seen_days)} day(s) with complaints in the "
                           f"last {days} days"), len(seen_days)
