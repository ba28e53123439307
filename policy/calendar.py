"""The floor's working calendar: which days count, and from what hour.

Service levels and some deadlines are promised in working days ("resolved
within 3 working days"), and the Chinese calendar moves days around: public
holidays are taken off, and some weekends become working days (调休) to pay
for them. The calendar owns that knowledge so a ``3wd`` deadline means the
same thing to the scheduler, the SLA clock and the desk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

__all__ = ["Calendar", "local_time"]

#: How far ahead to look for a working day before calling the calendar broken.
_SEARCH_DAYS = 3660


@dataclass(frozen=True)
class Calendar:
    """Working days and hours in one time zone, with holidays and make-up days.

    ``working_days`` are ISO weekdays (1 = Monday … 7 = Sunday); ``hours`` is
    the (start, end) of the working day in local time; ``holidays`` are dates
    off even when they fall on a working weekday; ``extra_working_days`` are
    dates worked even when they fall on a weekend (调休).
    """

    zone: str
    working_days: tuple[int, ...]
    hours: tuple[time, time]
    holidays: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.working_days:
            raise ValueError("a calendar needs at least one working day")
        if not self.hours[0] < self.hours[1]:
            raise ValueError("working hours must start before they end")

    @property
    def tz(self) -> ZoneInfo:
        """The zone as a tzinfo (zoneinfo caches instances, so this is cheap)."""
        return ZoneInfo(self.zone)

    def is_working_day(self, d: date) -> bool:
        """True when ``d`` is worked: a make-up day, or a working weekday that is no holiday."""
        if d in self.extra_working_days:
            return True
        return d.isoweekday() in self.working_days and d not in self.holidays

    def next_working_day(self, d: date) -> date:
        """The first working day strictly after ``d``."""
        for offset in range(1, _SEARCH_DAYS):
            candidate = d + timedelta(days=offset)
            if self.is_working_day(candidate):
                return candidate
        raise ValueError(f"no working day within {_SEARCH_DAYS} days after {d}")

    def working_start(self, moment: datetime) -> datetime:
        """Where working-day counting starts for ``moment`` (aware, local time out).

        Inside working hours of a working day: ``moment`` itself. Before the
        hours of a working day: that day's start. After the hours, or on a day
        off: the start of the next working day. This is what makes a complaint
        filed on Saturday get the same 3 working days as one filed on Monday
        morning.
        """
        local = moment.astimezone(self.tz)
        start, end = self.hours
        day, clock = local.date(), local.time().replace(tzinfo=None)
        if self.is_working_day(day):
            if clock < start:
                return self._at(day, start)
            if clock < end:
                return local
        return self._at(self.next_working_day(day), start)

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """``days`` working days after ``start`` (aware), in UTC.

        A working day is a whole calendar unit: from Friday 17:00 with weekends
        off, 3 working days end on Wednesday 17:00; holidays are skipped, make-up
        days count. A start outside working time first moves to
        :meth:`working_start`.
        """
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("add_working_days needs an aware datetime")
        if days < 0:
            raise ValueError("cannot count a negative number of working days")
        origin = self.working_start(start)
        day = origin.date()
        for _ in range(days):
            day = self.next_working_day(day)
        clock = origin.time().replace(tzinfo=None)
        return self._at(day, clock).astimezone(timezone.utc)

    def _at(self, day: date, clock: time) -> datetime:
        """Local wall-clock ``clock`` on ``day`` as an aware datetime."""
        return datetime.combine(day, clock, tzinfo=self.tz)


def local_time(moment: datetime, zone: str, *, seconds: bool = False) -> str:
    """A time as people read it, in `zone` and saying which: ``2026-12-05 17:03 +08:00``.

    The zone is written as its UTC offset, the one form that cannot be misread (``CST`` is
    China's and Chicago's), and the same on the desk and in the CLI. A naive `moment` is taken as
    UTC (what the database stores)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    local = aware.astimezone(ZoneInfo(zone))
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    offset = local.strftime("%z")  # +0800
    return f"{text} {offset[:3]}:{offset[3:]}"
