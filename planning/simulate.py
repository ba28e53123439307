"""The check of the Erlang C answer: a discrete-event simulation (simpy) of the planned day.

Erlang C answers each hour as if it stood alone, in steady state, with exponential handling
times. The simulation runs the day through with the staffing the plan recommends: Poisson
arrivals at each hour's forecast rate, handling times drawn from the stage's measured ones (the
real shape, long tail included), agents' ticket slots changing at the hour, and whatever is left
waiting at the end of an hour carried into the next. Several seeded replications; the result is
the share claimed within the target per stage and hour, which the plan shows beside Erlang C's.

simpy (a well-kept process-based simulation library) keeps the event loop, the clock and the
queue; what is ours is only the floor: a pool of slots that grows and shrinks by the hour.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import simpy

from planning.measure import STAGES, Measured
from planning.staffing import Plan

#: Replications of the day (each seeded), averaged.
REPLICATIONS = 20
#: Seconds in an hour of the simulated clock.
HOUR = 3600.0


@dataclass(frozen=True)
class Simulated:
    """Per (stage, hour start): the share of arrivals claimed within the target, and how many arrived."""

    within: dict[tuple[str, datetime], float]
    arrivals: dict[tuple[str, datetime], float]
    replications: int


def simulate(plan: Plan, measured: Measured, *, replications: int = REPLICATIONS, seed: int = 1) -> Simulated:
    """Run the plan's day `replications` times per stage with its staffing; averages per hour."""
    within: dict[tuple[str, datetime], list[float]] = defaultdict(list)
    arrived: dict[tuple[str, datetime], list[int]] = defaultdict(list)
    for stage in STAGES:
        rows = [r for r in plan.rows if r.stage == stage]
        samples = measured.stages[stage].handling
        capacity = max(1, round(measured.stages[stage].capacity))
        if not rows or not samples:
            continue
        for n in range(replications):
            outcome = _one_day(rows, samples, capacity, plan.target_wait_s, random.Random(f"{seed}:{stage}:{n}"))
            for hour, (count, kept) in outcome.items():
                arrived[(stage, hour)].append(count)
                if count:
                    within[(stage, hour)].append(kept / count)
    return Simulated({key: sum(v) / len(v) for key, v in within.items()},
                     {key: sum(v) / len(v) for key, v in arrived.items()}, replications)


def _one_day(rows: list, samples: list[float], capacity: int, target: float,
             rng: random.Random) -> dict[datetime, tuple[int, int]]:
    """One replication of one stage: per hour, (tickets that arrived, of them claimed in time)."""
    env = simpy.Environment()
    slots = simpy.Store(env)
    counts: dict[datetime, list[int]] = {row.hour: [0, 0] for row in rows}
    wanted = [0]  # slots the current hour's staffing provides
    retiring = [0]  # slots to take out of service as soon as they come free

    def staffing() -> simpy.events.Event:
        for row in rows:
            change = row.agents * capacity - wanted[0]
            wanted[0] = row.agents * capacity
            if change > 0:
                cancel = min(change, retiring[0])
                retiring[0] -= cancel
                for _ in range(change - cancel):
                    slots.put(object())
            elif change < 0:
                retiring[0] += -change
            yield env.timeout(HOUR)

    def ticket(hour: datetime) -> simpy.events.Event:
        arrived_at = env.now
        slot = yield slots.get()
        if env.now - arrived_at <= target:
            counts[hour][1] += 1
        yield env.timeout(rng.choice(samples))
        if retiring[0] > 0:
            retiring[0] -= 1  # the hour's staffing shrank: this slot goes off duty
        else:
            slots.put(slot)

    def arrivals() -> simpy.events.Event:
        for index, row in enumerate(rows):
            start, end = index * HOUR, (index + 1) * HOUR
            rate = row.arrivals / HOUR
            if rate <= 0:
                yield env.timeout(end - env.now)
                continue
            while True:
                gap = rng.expovariate(rate)
                if env.now + gap >= end:
                    yield env.timeout(end - env.now)
                    break
                yield env.timeout(gap)
                counts[row.hour][0] += 1
                env.process(ticket(row.hour))
            assert start <= env.now

    env.process(staffing())
    env.process(arrivals())
    # After the last hour the floor keeps its last staffing until every ticket was claimed.
    env.run(until=len(rows) * HOUR + 48 * HOUR)
    return {hour: (count, kept) for hour, (count, kept) in counts.items()}
