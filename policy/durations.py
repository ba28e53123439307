"""Durations as the policy file writes them: ``90s``, ``30m``, ``48h``, ``3d``, ``3wd``.

Deadlines and service levels are promises made to people ("we answer within 3
working days"), so a duration keeps the unit it was written in instead of
collapsing to seconds at load time: ``3wd`` must land on Wednesday when it
starts on a Friday, which only the calendar can tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policy.calendar import Calendar

__all__ = ["Duration", "parse_duration", "UNITS", "DURATION_HINT"]

#: Seconds in one of each unit; a working day counts as a nominal day.
UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "wd": 86400}

#: The reminder appended to every "not a duration" message.
DURATION_HINT = "use 90s, 30m, 48h, 3d or 3wd"

_PATTERN = re.compile(r"([0-9]+)(s|m|h|d|wd)")


@dataclass(frozen=True)
class Duration:
    """An amount of one unit; ``wd`` counts working days on a :class:`Calendar`."""

    amount: int
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unknown duration unit {self.unit!r} ({DURATION_HINT})")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 0:
            raise ValueError(f"duration amount must be a whole number >= 0, not {self.amount!r}")

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def seconds(self) -> float:
        """Nominal length, for display and sorting only (a working day counts 86400 s)."""
        return float(self.amount * UNITS[self.unit])

    def after(self, start: datetime, calendar: Calendar | None = None) -> datetime:
        """The moment this duration after ``start`` ends, in UTC.

        ``s``/``m``/``h``/``d`` are elapsed time (``d`` is 24 hours), so they
        need no calendar. ``wd`` is counted on ``calendar`` (see
        :meth:`Calendar.add_working_days`): the same clock time ``amount``
        working days later, holidays skipped.
        """
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("Duration.after needs an aware datetime")
        if self.unit == "wd":
            if calendar is None:
                raise ValueError(f"{self} counts working days and needs a calendar")
            return calendar.add_working_days(start, self.amount)
        utc = start.astimezone(timezone.utc)
        return utc + timedelta(seconds=self.amount * UNITS[self.unit])


def parse_duration(text: str) -> Duration:
    """Read ``"48h"``-style text; raise :class:`ValueError` saying what is accepted.

    The error message is shaped to follow a key path in a policy problem, e.g.
    ``deadlines.evidence: '3x' is not a duration (use 90s, 30m, 48h, 3d or 3wd)``.
    """
    match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration ({DURATION_HINT})")
    return Duration(int(match.group(1)), match.group(2))
