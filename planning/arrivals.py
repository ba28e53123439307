"""When each stage's work arrives: the forecast's complaints, moved later by the measured delays.

A complaint admitted at 09:10 is not stage 4's work at 09:10: it negotiates first, waits and is
handled in stage 1, perhaps waits days for evidence, is judged — and only then reaches stage 4. So
a stage's tickets in an hour are the complaints of that hour and of the hours before it, each
bringing the stage's measured visits per complaint, spread over the hours after it by the
measured delays from a complaint's admission to its arrivals at the stage (`measure.StageWork.delays`).

Delays of days (a party's 72 hours for evidence, an appeal after a week) reach back before the
forecast's first hour: the days before it are taken to have had the complaints of its first day
(the same assumption as the default forecast, the mean of the recent days), so the evidence that
comes back tomorrow morning from complaints of three days ago is counted. Work that lands outside
the forecast's hours (after its last, or in a gap) is not planned for; `stage_arrivals` says how
much that is.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

HOUR = 3600.0


def delay_shares(delays: Sequence[float]) -> list[float]:
    """The share of a stage's arrivals that come k = 0, 1, 2... hours after their complaint's hour.
    A complaint arrives anywhere in its hour (uniformly), so a delay of 2 h 15 min puts three
    quarters of its ticket 2 hours later and a quarter 3 hours later. No delays measured: none."""
    if not delays:
        return [1.0]
    shares = [0.0] * (int(max(0.0, max(delays)) // HOUR) + 2)
    for delay in delays:
        hours = max(0.0, delay) / HOUR
        whole = int(hours)
        shares[whole] += 1.0 - (hours - whole)
        shares[whole + 1] += hours - whole
    while len(shares) > 1 and shares[-1] == 0.0:
        shares.pop()
    return [share / len(delays) for share in shares]


def stage_arrivals(hours: Sequence[tuple[datetime, float]], per_complaint: float,
                   shares: Sequence[float]) -> tuple[list[float], float]:
    """A stage's arrivals in each of the forecast's `hours` (UTC starts, in order, with their
    complaints), and how many of the forecast's complaints' tickets land outside those hours."""
    if not hours:
        return [], 0.0
    first = hours[0][0]
    index = {_offset(first, start): n for n, (start, _) in enumerate(hours)}
    counts = {_offset(first, start): count for start, count in hours}
    arrivals = [0.0] * len(hours)
    outside = 0.0
    for at, count in counts.items():  # the forecast's own complaints
        for k, share in enumerate(shares):
            if index.get(at + k) is not None:
                arrivals[index[at + k]] += count * share * per_complaint
            else:
                outside += count * share * per_complaint
    days_back = math.ceil(len(shares) / 24)
    for at in range(-24 * days_back, 0):  # the days before: like the forecast's first
        count = counts.get(at % 24, 0.0)
        if not count:
            continue
        for k in range(max(0, -at), len(shares)):
            n = index.get(at + k)
            if n is not None:
                arrivals[n] += count * shares[k] * per_complaint
    return arrivals, outside


def _offset(first: datetime, start: datetime) -> int:
    return round((start - first) / timedelta(hours=1))
