"""The plan: per stage and hour, the agents needed so that tickets wait no longer than the target
with the stated probability (Erlang C on each hour's rate), and the inputs it rests on.

Each stage is an M/M/N queue whose servers are ticket slots: an agent holds up to its capacity
of tickets at once, and a slot is busy from the claim to the decision (the measured handling
time). A stage's arrivals in an hour are the forecast's complaints times the stage's measured
visits per complaint, each arriving after the measured delay from its complaint's admission
(`planning.arrivals`: negotiation, earlier stages, evidence rounds and other hidden states,
appeals). Erlang C is the steady-state answer hour by hour: it does not carry a backlog from one
hour into the next — the plan says so in its statement of inputs, and `planning.simulate`
checks the day with the backlog carried.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from planning.arrivals import delay_shares, stage_arrivals
from planning.erlang import servers_needed
from planning.forecast import Forecast
from planning.measure import STAGES, Measured, by_stage

#: Below these, the measured distributions are too thin to plan from.
MIN_COMPLAINTS = 50
MIN_HANDLING_SAMPLES = 20


class PlanRefused(Exception):
    """Too little data to plan from: every gap, said plainly."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class HourPlan:
    stage: str
    hour: datetime  # UTC start
    arrivals: float
    agents: int
    expected_wait_s: float
    within_target: float  # share of arrivals claimed within the target wait (Erlang C)
    #: The same share in the discrete-event simulation of the day with this staffing (`planning.simulate`).
    simulated_within: float | None = None


@dataclass
class Plan:
    model: str
    target_wait_s: float
    probability: float
    forecast: str
    inputs: dict
    rows: list[HourPlan] = field(default_factory=list)

    def peak(self, stage: str) -> int:
        return max((r.agents for r in self.rows if r.stage == stage), default=0)

    def as_json(self) -> dict:
        return {"model": self.model, "target_wait_seconds": self.target_wait_s, "probability": self.probability,
                "forecast": self.forecast, "inputs": self.inputs,
                "rows": [{**asdict(r), "hour": r.hour.isoformat(),
                          "expected_wait_s": round(r.expected_wait_s, 1),
                          "within_target": round(r.within_target, 4), "arrivals": round(r.arrivals, 2),
                          "simulated_within": None if r.simulated_within is None else round(r.simulated_within, 4)}
                         for r in self.rows]}


def check_enough(measured: Measured) -> None:
    """Refuse to plan from too little data, naming each gap."""
    reasons = []
    if measured.complaints < MIN_COMPLAINTS:
        reasons.append(f"only {measured.complaints} complaint{'' if measured.complaints == 1 else 's'} "
                       f"{'was' if measured.complaints == 1 else 'were'} admitted between {measured.since:%Y-%m-%d} and "
                       f"{measured.until:%Y-%m-%d} (at least {MIN_COMPLAINTS} are needed)")
    for stage in STAGES:
        work = measured.stages[stage]
        if work.arrivals and len(work.handling) < MIN_HANDLING_SAMPLES:
            reasons.append(f"{stage}: {len(work.handling)} handled tickets measured (claim to decision); "
                           f"at least {MIN_HANDLING_SAMPLES} are needed")
    if reasons:
        raise PlanRefused(reasons)


def make_plan(forecast: Forecast, measured: Measured, *, target_wait: timedelta, probability: float,
              days_of_history: int | None = None) -> Plan:
    """Agents per stage and forecast hour (Erlang C), after `check_enough`."""
    check_enough(measured)
    target = target_wait.total_seconds()
    inputs = {"window": {"since": measured.since.isoformat(), "until": measured.until.isoformat(),
                         "complaints": measured.complaints},
              "stages": by_stage(measured),
              "assumptions": "Erlang C per stage and hour: Poisson arrivals at the forecast's complaints times "
                             "the stage's measured visits per complaint, each arriving after the measured delay "
                             "from its complaint's admission (negotiation, earlier stages, evidence and other "
                             "hidden states, appeals; the days before the forecast like its first), exponential "
                             "handling with the measured mean (claim to decision), agents holding their mean "
                             "capacity of tickets at once; no backlog carried between hours"}
    if days_of_history is not None:
        inputs["forecast_days"] = days_of_history
    plan = Plan("erlang_c", target, probability, forecast.source, inputs)
    for stage in STAGES:
        work = measured.stages[stage]
        handling = work.mean_handling
        arrivals, outside = stage_arrivals(forecast.hours, measured.visits(stage), delay_shares(work.delays))
        inputs["stages"][stage]["arrivals_outside_forecast_hours"] = round(outside, 1)
        for (hour, _), expected in zip(forecast.hours, arrivals):
            rate = expected / 3600.0  # tickets per second
            if rate <= 0:
                plan.rows.append(HourPlan(stage, hour, 0.0, 0, 0.0, 1.0))
                continue
            if handling <= 0:  # decided the moment it is claimed: someone must still be there to claim
                plan.rows.append(HourPlan(stage, hour, rate * 3600.0, 1, 0.0, 1.0))
                continue
            staffing = servers_needed(rate, handling, target, probability)
            agents = math.ceil(staffing.servers / max(1.0, work.capacity))
            plan.rows.append(HourPlan(stage, hour, rate * 3600.0, agents, staffing.mean_wait, staffing.within))
    return plan
