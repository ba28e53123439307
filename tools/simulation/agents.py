"""The floor: four agent pools and a supervisor, working through the HTTP desk with bearer tokens.

Each agent is a thread on the Flask test client: it claims the next ticket of
its stage (``POST /me/claim``; with nothing to claim, it waits until
``op.events`` tells of a ticket reaching its stage, or a moment has passed),
reads the stage's option boxes, clicks one of the actions the ticket allows
with configured parameters and a QC verdict, and waits until the stage worker
has applied it (``GET /dispatches/{id}``).
A ticket left in the agent's hands with nothing to click (a complaint fee
awaiting a supervisor, a platform advance not yet approved) is parked and
looked at again from ``GET /me/tickets`` once its version moves. The
supervisor watches stage 4 for payments awaiting approval and approves them,
declining a complaint fee now and then.

By default the agents decide the moment they claim, and every agent works all
the time. A `Floor` changes both, as a staffing plan does: per stage, how many
agents are on duty in each period (an agent past its shift finishes the ticket
in hand and claims no more), and how long an agent holds a ticket before
deciding (`Handling`, drawn per ticket; `tools.simulation.staffed` runs a
planned day with it).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from models.agent import add_agent
from tools.simulation.decisions import decide
from tools.simulation.world import rng

if TYPE_CHECKING:
    import flask
    from flask.testing import FlaskClient

log = logging.getLogger("tools.demo")

#: Agents per stage: stage 2 is where evidence rounds loop, so it gets the most.
POOLS: dict[int, int] = {1: 4, 2: 3, 3: 3, 4: 3}
#: An agent with nothing to claim waits this long, doubling up to IDLE_MAX (seconds), or until an
#: event says a ticket reached its stage.
IDLE_MIN, IDLE_MAX = 0.05, 0.4
#: The state in which a ticket reaching each stage waits to be claimed.
WAITING_IN = {"awaiting_takeover": 1, "stage2": 2, "stage3": 3, "stage4": 4}
#: How often an agent holding parked tickets, and the supervisor, look again (seconds).
LOOK_AGAIN = 0.25
#: The supervisor declines this share of complaint fees (the agent then grants a smaller one).
DECLINE_FEE = 0.25


class Handling:
    """How long an agent of each stage holds a ticket before deciding: exponential (an M/M/N
    queue's servers, as Erlang C assumes) with the stage's mean, in seconds of the run's clock.

    The times are drawn in shuffled blocks of `BLOCK`, one from each of its equally likely slices
    of the distribution (stratified sampling): they have the exponential's shape, long tail
    included, but any 20 in a row average within a few per cent of the mean (independent draws:
    ±22 % at one standard deviation), so what a short run shows is the floor's doing, not the
    dice's."""

    BLOCK = 20

    def __init__(self, means: Mapping[int, float], seed: int = 1) -> None:
        self.means = dict(means)
        self._seed = seed
        self._blocks: Counter[int] = Counter()
        self._left: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def draw(self, stage: int) -> float:
        mean = self.means.get(stage, 0.0)
        if mean <= 0:
            return 0.0
        with self._lock:
            left = self._left.setdefault(stage, [])
            if not left:
                self._blocks[stage] += 1
                r = rng(self._seed, "handling", stage, self._blocks[stage])
                left.extend(-mean * math.log(1.0 - (i + r.random()) / self.BLOCK) for i in range(self.BLOCK))
                r.shuffle(left)
            return left.pop()


@dataclass
class Floor:
    """Who is on duty when, and how long they take: per stage, the agents on duty in each period of
    `period` seconds from `start` (after the last period, its count, at least one), and their
    handling times. `start` is set when the run's clock starts (`DemoRun.start`)."""

    shifts: Mapping[int, Sequence[int]]
    period: float
    handling: Handling | None = None
    capacity: int = 1
    start: float = field(default_factory=time.monotonic)

    def pools(self) -> dict[int, int]:
        """The agents each stage needs at its busiest (every one of them gets a token)."""
        return {stage: max(counts, default=0) for stage, counts in self.shifts.items()}

    def period_at(self, now: float) -> int:
        return max(0, math.floor((now - self.start) / self.period))

    def on_duty(self, stage: int, number: int, now: float) -> bool:
        """Whether the stage's `number`-th agent (from 1) works at `now` (a monotonic time). After the
        last period its staffing stays, at least one agent, so that what is left gets done."""
        counts = self.shifts.get(stage) or [0]
        period = self.period_at(now)
        return number <= (counts[period] if period < len(counts) else max(1, counts[-1]))

    def until_next_period(self, now: float) -> float:
        return self.start + (self.period_at(now) + 1) * self.period - now


class AgentPool:
    """The four floor pools and the supervisors, each agent with its own token. With a `floor`, the
    pools are its busiest shifts, each agent holding `floor.capacity` tickets at most."""

    def __init__(self, api: "flask.Flask", seed: int, pools: dict[int, int] = POOLS, supervisors: int = 1,
                 floor: Floor | None = None) -> None:
        self.api, self.seed, self.floor = api, seed, floor
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        #: Per stage: how many tickets reached it (as the events tell), for agents waiting for work.
        self._arrived: Counter[int] = Counter()
        self._work = {stage: threading.Condition() for stage in (1, 2, 3, 4)}
        if floor is not None:
            pools = floor.pools()
        capacity = {"capacity": floor.capacity} if floor is not None else {}
        #: (stage, name, token); created through the CLI's own function (needs a database connection).
        self.agents = [(stage, f"demo-stage{stage}-{i}", add_agent(f"demo-stage{stage}-{i}", stage, **capacity))
                       for stage, count in pools.items() for i in range(1, count + 1)]
        self.supervisors = [(f"demo-supervisor-{i}", add_agent(f"demo-supervisor-{i}", 4, supervisor=True,
                                                                **capacity))
                            for i in range(1, supervisors + 1)]

    def count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def on_event(self, routing_key: str, body: dict) -> None:
        """An ``op.events`` event: a ticket that reached a stage wakes one agent waiting there (all of
        them at once would only race each other for it)."""
        stage = WAITING_IN.get(body.get("to_state") or "")
        if routing_key.startswith("ticket.") and stage is not None and body.get("from_state") != body["to_state"]:
            with self._work[stage]:
                self._arrived[stage] += 1
                self._work[stage].notify()

    def arrived(self, stage: int) -> int:
        with self._work[stage]:
            return self._arrived[stage]

    def wait_for_work(self, stage: int, seen: int, timeout: float) -> None:
        """Until woken for a ticket that reached `stage` (returning at once when one came since the
        `seen`-th), or `timeout` seconds."""
        with self._work[stage]:
            if self._arrived[stage] == seen:
                self._work[stage].wait(timeout)

    def run_agent(self, stage: int, token: str, should_stop: Callable[[], bool], number: int = 1) -> None:
        DeskAgent(self, stage, token, should_stop, number).run()

    def run_supervisor(self, token: str, should_stop: Callable[[], bool]) -> None:
        Supervisor(self, token, should_stop).run()


class _Desk:
    """An authenticated client of the desk's API."""

    def __init__(self, pool: AgentPool, token: str, should_stop: Callable[[], bool]) -> None:
        self.pool, self.should_stop = pool, should_stop
        self.client: FlaskClient = pool.api.test_client()
        self.auth = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> dict | list:
        return self.client.get(path, headers=self.auth).get_json()

    def act(self, ticket: dict, action: str, params: dict, qc: dict | None) -> tuple[int, dict]:
        reply = self.client.post(f"/tickets/{ticket['id']}/actions", headers=self.auth, json={
            "action": action, "expected_version": ticket["version"], "params": params, "qc": qc})
        return reply.status_code, reply.get_json() or {}

    def applied(self, dispatch_id: int, patience: float = 30.0) -> bool:
        """Wait for the stage worker to apply (True) or refuse (False) an accepted decision."""
        deadline, pause = time.monotonic() + patience, 0.01
        while time.monotonic() < deadline and not self.should_stop():
            time.sleep(pause)
            row = self.get(f"/dispatches/{dispatch_id}")
            if isinstance(row, dict) and row.get("done"):
                return row.get("outcome") == "applied"
            pause = min(pause * 1.5, 0.05)
        return False


class DeskAgent(_Desk):
    """One agent at the desk: claim, read the options, decide, wait until the decision is applied."""

    def __init__(self, pool: AgentPool, stage: int, token: str, should_stop: Callable[[], bool],
                 number: int = 1) -> None:
        super().__init__(pool, token, should_stop)
        self.stage, self.number = stage, number
        self.options: dict | None = None
        #: Tickets in my hands with nothing to click, by the version I saw.
        self.parked: dict[int, int] = {}
        #: What this agent learned per ticket: the fee it asked approval for, the budget left.
        self.hints: dict[int, dict] = {}
        #: How long the system has lately taken to apply this agent's decisions (seconds).
        self.applying = 0.0

    def run(self) -> None:
        idle, look_at = IDLE_MIN, 0.0
        while not self.should_stop():
            if self.parked and time.monotonic() >= look_at:
                look_at = time.monotonic() + LOOK_AGAIN
                if self.revisit():
                    idle = IDLE_MIN
                    continue
            floor = self.pool.floor
            if floor is not None and not floor.on_duty(self.stage, self.number, time.monotonic()):
                self.pause(min(IDLE_MAX, floor.until_next_period(time.monotonic())))  # off shift
                continue
            seen = self.pool.arrived(self.stage)
            reply = self.client.post("/me/claim", headers=self.auth)
            if reply.status_code == 204:  # nothing waiting: back off, leave the CPU to the system
                self.pool.wait_for_work(self.stage, seen, idle)
                idle = min(idle * 2, IDLE_MAX)
                continue
            idle = IDLE_MIN
            if reply.status_code != 200:
                self.pool.count(f"claim answered {reply.status_code}")
                time.sleep(0.2)
                continue
            self.pool.count(f"stage{self.stage} claims")
            ticket = reply.get_json()
            if self.handle(ticket):
                ticket = self.get(f"/tickets/{ticket['id']}")  # as it is now, after the time spent on it
            self.work(ticket)

    def handle(self, ticket: dict) -> bool:
        """Hold the ticket for the handling time the floor draws for it (False: none drawn): the
        decision should be applied that long after the claim, so the time the system took to apply
        this agent's recent decisions comes off the pause (a busy machine does not make the
        agents slower than drawn)."""
        handling = self.pool.floor.handling if self.pool.floor is not None else None
        if handling is None:
            return False
        seconds = handling.draw(self.stage)
        self.pause(seconds - self.applying)
        return seconds > 0

    def pause(self, seconds: float) -> None:
        """Sleep `seconds`, waking early when the run stops."""
        until = time.monotonic() + seconds
        while not self.should_stop() and (left := until - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def revisit(self) -> bool:
        """Work a parked ticket that moved on (an approval decided); forget those no longer mine."""
        mine = {t["id"]: t["version"] for t in self.get("/me/tickets") or []}
        for ticket_id, version in list(self.parked.items()):
            if ticket_id not in mine:
                del self.parked[ticket_id]
            elif mine[ticket_id] != version:
                del self.parked[ticket_id]
                self.work(self.get(f"/tickets/{ticket_id}"))  # type: ignore[arg-type]
                return True
        return False

    def work(self, ticket: dict) -> None:
        """Decide until the ticket leaves my hands or waits on someone else; reload and decide
        again when it moved on under us (late evidence, a raced decision, a supervisor's answer)."""
        me = ticket["assignee"]
        if self.options is None:
            self.options = self.get(f"/options/stage{self.stage}")  # type: ignore[assignment]
        for _ in range(6):
            if self.should_stop() or ticket.get("assignee") != me:
                return  # it left my hands: applied to the next stage, or taken back
            if not ticket.get("allowed_actions"):
                self.parked[ticket["id"]] = ticket["version"]
                if (ticket.get("payment") or {}).get("pending_approval"):
                    self.pool.count(f"stage{self.stage} waited for a supervisor")
                return
            hints = self.hints.setdefault(ticket["id"], {})
            action, params, qc = decide(self.stage, ticket, self.options or {},
                                        rng(self.pool.seed, "agent", ticket["id"], ticket["version"]), hints)
            asked = time.monotonic()
            status, body = self.act(ticket, action, params, qc)
            if status == 202:
                if self.applied(body["dispatch_id"]):
                    self.applying += (time.monotonic() - asked - self.applying) / 4  # a moving average
                    self.pool.count(f"stage{self.stage} {action}")
                    if qc and qc["verdict"] == "flag":
                        self.pool.count("qc flags")
                    if action != "complaint_fee":
                        return  # every other applied decision moves the ticket out of my stage
                    hints["asked"] = params["amount"]  # closed, or kept here awaiting a supervisor
                else:
                    self.pool.count("refused by the worker")  # raced, or the fee budget ran out meanwhile
                    if action == "complaint_fee":
                        hints["asked"] = params["amount"]
            elif status == 422 and (body.get("error") or {}).get("code") == "over_budget":
                self.pool.count("complaint fee over the month's budget (422)")
                hints["budget_left"] = _budget_left(body)
            else:
                self.pool.count(f"answered {status}")
                if status not in (403, 409):  # 422 and the like: a bug, not a race
                    log.warning("desk refused %s on ticket %s: %s", action, ticket["id"], body)
                    return
            ticket = self.get(f"/tickets/{ticket['id']}")  # type: ignore[assignment]
        if ticket.get("assignee") == me:
            self.parked[ticket["id"]] = -1  # still mine after several tries: look again shortly


class Supervisor(_Desk):
    """Four eyes on the platform's money: approves what stage 4 and the scheduler ask for."""

    def __init__(self, pool: AgentPool, token: str, should_stop: Callable[[], bool]) -> None:
        super().__init__(pool, token, should_stop)
        self.seen: dict[int, int] = {}

    def run(self) -> None:
        while not self.should_stop():
            looked = 0
            for summary in self.get("/tickets?state=stage4&limit=100") or []:
                if self.seen.get(summary["id"]) != summary["version"]:
                    self.seen[summary["id"]] = summary["version"]
                    looked += self.review(self.get(f"/tickets/{summary['id']}"))  # type: ignore[arg-type]
            time.sleep(0.02 if looked else LOOK_AGAIN)

    def review(self, ticket: dict) -> int:
        pending = (ticket.get("payment") or {}).get("pending_approval")
        allowed = ticket.get("allowed_actions") or []
        if not pending or "approve_payment" not in allowed and "decline_payment" not in allowed:
            return 0
        r = rng(self.pool.seed, "supervisor", ticket["id"], ticket["version"])
        # Declining an advance would leave the ticket waiting in stage 4 for a voucher nobody can send.
        decline = pending["kind"] == "complaint_fee" and r.random() < DECLINE_FEE
        for action in ("decline_payment",) if decline else ("approve_payment", "decline_payment"):
            if action not in allowed:
                continue  # an approval the budget no longer covers can only be declined
            status, body = self.act(ticket, action, {}, None)
            if status == 202 and self.applied(body["dispatch_id"]):
                self.pool.count(f"supervisor {action} {pending['kind']}")
            else:
                self.pool.count(f"supervisor {action} answered {status}")
                self.seen.pop(ticket["id"], None)  # look again on the next round
            return 1
        return 0


def _budget_left(error: dict) -> int:
    """What is left of the month's complaint-fee budget, in minor units, from a 422 ``over_budget``
    answer (its ``budget_left_minor``); 0 when the answer does not say (no fee is then tried)."""
    left = (error.get("error") or {}).get("budget_left_minor")
    return max(0, left) if isinstance(left, int) and not isinstance(left, bool) else 0
