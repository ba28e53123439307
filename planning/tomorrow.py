"""Tomorrow's plan as the command and the dashboard make it, and a cache the dashboard reads.

A plan reads four weeks of audit trail: far too much for a page that refreshes every few
seconds. `PlanCache` makes one in a background thread when the one it holds is older than
`PlanCache.max_age` (or is for another day) and serves the last one meanwhile.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from models.base import database
from planning.forecast import Forecast, read_forecast, recent_hours
from planning.measure import Measured, measure
from planning.simulate import REPLICATIONS, simulate
from planning.staffing import Plan, PlanRefused, make_plan
from policy import Policy

log = logging.getLogger("disputes.planning")

#: How far back the measurements reach ("the last four weeks").
HISTORY = timedelta(days=28)
#: Tickets simulated per plan at most (replications shrink for a busy forecast), about 2 s of work.
SIMULATED_TICKETS = 200_000


def plan_for(policy: Policy, now: datetime, *, forecast_text: str | None = None, forecast_name: str = "forecast",
             day: date | None = None, probability: float = 0.8, target_wait: timedelta | None = None) -> Plan:
    """The plan for `day` (tomorrow in the policy calendar's zone by default), from a forecast
    file's text or from the recent days' arrivals. Raises `ForecastError` or `PlanRefused`."""
    zone = ZoneInfo(policy.calendar.zone)
    day = day or (now.astimezone(zone) + timedelta(days=1)).date()
    measured = measure(now - HISTORY, now)
    days = None
    if forecast_text is not None:
        forecast: Forecast = read_forecast(forecast_text, day, zone, forecast_name)
    else:
        forecast, days = recent_hours(measured.complaints_by_hour, day, zone, now)
    target = target_wait or timedelta(seconds=policy.sla.accept.seconds())
    plan = make_plan(forecast, measured, target_wait=target, probability=probability, days_of_history=days)
    return checked_by_simulation(plan, measured)


def checked_by_simulation(plan: Plan, measured: Measured) -> Plan:
    """The plan with each hour's share claimed in time as the simulation of its day finds it."""
    total = sum(r.arrivals for r in plan.rows)
    replications = max(3, min(REPLICATIONS, int(SIMULATED_TICKETS / total))) if total else 1
    found = simulate(plan, measured, replications=replications)
    plan.rows = [replace(r, simulated_within=found.within.get((r.stage, r.hour))) for r in plan.rows]
    plan.inputs["simulation"] = (f"{replications} simulated days per stage (simpy): Poisson arrivals at each hour's "
                                 "rate, handling times drawn from the measured ones, the plan's agents per hour, "
                                 "the backlog of an hour carried into the next")
    return plan


@dataclass
class Cached:
    made_at: float  # time.monotonic()
    day: date
    plan: Plan | None
    refused: list[str] | None


class PlanCache:
    """The last plan for tomorrow, refreshed in the background."""

    def __init__(self, policy: Callable[[], Policy], max_age: float = 900.0) -> None:
        self._policy = policy
        self.max_age = max_age
        self._cached: Cached | None = None
        self._lock = threading.Lock()
        self._running = False

    def get(self, now: datetime) -> Cached | None:
        """The plan held (None while the first is being made); starts a refresh when it is due."""
        policy = self._policy()
        day = (now.astimezone(ZoneInfo(policy.calendar.zone)) + timedelta(days=1)).date()
        with self._lock:
            cached = self._cached
            due = cached is None or cached.day != day or time.monotonic() - cached.made_at > self.max_age
            if due and not self._running:
                self._running = True
                threading.Thread(target=self._refresh, args=(policy, now, day), daemon=True,
                                 name="plan-cache").start()
        return cached

    def _refresh(self, policy: Policy, now: datetime, day: date) -> None:
        try:
            with database.connection_context():
                try:
                    result = Cached(time.monotonic(), day, plan_for(policy, now.astimezone(timezone.utc)), None)
                except PlanRefused as refused:
                    result = Cached(time.monotonic(), day, None, refused.reasons)
            with self._lock:
                self._cached = result
        except Exception:  # noqa: BLE001 - a dashboard panel must not take the page down
            log.exception("tomorrow's plan could not be made")
        finally:
            with self._lock:
                self._running = False
