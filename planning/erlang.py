"""Erlang C: the M/M/N queue of a stage's agents (Poisson arrivals, exponential handling times,
N servers, nobody leaves the queue).

Written here rather than taken from pyworkforce: that package brings OR-Tools, pandas and
joblib for rostering, and what a plan needs of it is these few lines, checked against the
published Erlang C tables in ``tests/planning/test_erlang.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: No stage is planned above this many servers (a forecast that needs more is an input error).
MAX_SERVERS = 100_000


def erlang_c(servers: int, load: float) -> float:
    """The probability that an arrival waits, with `servers` servers and `load` erlangs offered
    (arrival rate × mean handling time). 1 when the queue is unstable (load ≥ servers)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    # Erlang B by its recurrence (stable for thousands of servers), then C from B.
    b = 1.0
    for n in range(1, servers + 1):
        b = load * b / (n + load * b)
    return b / (1 - (load / servers) * (1 - b))


def chance_within(servers: int, load: float, handling: float, target: float) -> float:
    """The share of arrivals answered within `target` (same time unit as `handling`)."""
    if load <= 0:
        return 1.0
    if servers <= load:
        return 0.0
    return 1.0 - erlang_c(servers, load) * math.exp(-(servers - load) * target / handling)


def mean_wait(servers: int, load: float, handling: float) -> float:
    """The expected wait of an arrival (ASA); infinite when the queue is unstable."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return math.inf
    return erlang_c(servers, load) * handling / (servers - load)


@dataclass(frozen=True)
class Staffing:
    servers: int
    waits: float  # probability of waiting at all
    within: float  # share answered within the target
    mean_wait: float


def servers_needed(rate: float, handling: float, target: float, probability: float) -> Staffing:
    """The fewest servers for which at least `probability` of the arrivals (at `rate` per unit of
    time, each held `handling` units) wait no longer than `target` units."""
    load = rate * handling
    servers = max(1, math.floor(load) + 1) if load > 0 else 0
    while servers < MAX_SERVERS and chance_within(servers, load, handling, target) < probability:
        servers += 1
    if load > 0 and chance_within(servers, load, handling, target) < probability:
        raise ValueError(f"{rate:g} arrivals per unit of {handling:g} would need more than {MAX_SERVERS} servers")
    return Staffing(servers, erlang_c(servers, load), chance_within(servers, load, handling, target),
                    mean_wait(servers, load, handling))
