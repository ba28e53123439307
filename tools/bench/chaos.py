"""``disputes bench chaos``: the chaos soak of issue 7 — no ticket and no cent lost under faults.

One seeded workload runs twice on servers of its own (a private Redis, a private PostgreSQL
cluster, a private RabbitMQ vhost: `tools.bench.private_servers`) with every part of the
system as a separate process, as in the Procfile (``dramatiq workers.<queue>`` per queue,
``disputes intake``, ``disputes scheduler``, ``disputes api``): first without faults, then while a
controller SIGKILLs and restarts random stage workers, the scheduler (several times), the intake
and the API, and restarts Redis once and PostgreSQL once. Upstream and the parties publish to
``op.intake``; agents work through the HTTP API (`tools.bench.chaos_world`).

Afterwards `tools.bench.chaos_checks` checks each run — every ticket terminal, no transition
applied twice, every committed event delivered on ``op.events`` in commit order per ticket, the
books' own invariants (``disputes ledger``) — and that the faulted run's books, final states and
lifecycles equal the fault-free run's. It prints the timeline of faults and the figures, writes
JSON with ``--json``, and the command exits 1 when an invariant fails. ``OP_CHAOS_DEBUG=1`` adds,
to each progress line, what the run still waits for and its oldest unfinished tickets.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import tomli_w
from rich.console import Console

from models.agent import add_agent
from disputes.settings import QUEUES
from policy import default_policy_dict, load_policy
from tools.bench import chaos_checks
from tools.bench.chaos_run import Fault, RunResult
from tools.bench.chaos_world import Floor, Parties, Tap, make_plan
from tools.bench.core import DISPUTES, DRAMATIQ, BenchError, Procs, child_env, make_app, tail, workdir
from tools.bench.private_servers import PrivatePostgres, PrivateRedis, RabbitVhost, free_port
from tools.simulation.world import Mailbox

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
#: Deadlines of the parties' moves: long beside any fault (a silent party waits them out).
PARTY_DEADLINE = "45s"
#: Tickets in flight at once (complaints are published as earlier tickets finish).
WINDOW = 300
#: Complaints published per second at most (the intake must not queue answers behind a burst).
RATE = 4.0
#: Agents per stage pool; each is a thread here, over HTTP.
POOLS = {1: 3, 2: 3, 3: 2, 4: 2}
#: Seconds between two faults (uniform), and how long a killed process stays down.
FAULT_GAP = (3.0, 7.0)
DOWN_FOR = (0.3, 2.0)
SERVER_DOWN_FOR = 2.0


# ---- the stack ------------------------------------------------------------------------------------

class Stack:
    """The system's processes on the private servers; each can be killed and started again."""

    def __init__(self, tmp: Path, env: dict[str, str], procs: Procs, threads: int = 4) -> None:
        self.tmp, self.env, self.procs, self.threads = tmp, env, procs, threads
        self.running: dict[str, object] = {}

    def argv(self, name: str) -> list[str]:
        if name in QUEUES:
            return DRAMATIQ + [f"workers.{name}", "--queues", name, "--processes", "1", "--threads",
                               str(self.threads)]
        return DISPUTES + [name]

    def start(self, name: str) -> None:
        self.running[name] = self.procs.start(name, self.argv(name), self.env)

    def kill(self, name: str) -> None:
        popen = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        popen.wait(timeout=10)  # type: ignore[attr-defined]
        self.procs.finished(popen)  # type: ignore[arg-type]

    def check(self) -> None:
        # A copy: the fault controller's thread replaces entries while it restarts a process.
        for name, popen in list(self.running.items()):
            if popen.poll() is not None:  # type: ignore[attr-defined]
                log = self.procs.finished(popen)  # type: ignore[arg-type]
                raise BenchError(f"{name} exited {popen.returncode} on its own:\n{tail(log)}")  # type: ignore[attr-defined]


def write_policy(path: Path) -> Path:
    data = default_policy_dict()
    data["deadlines"] = {**data["deadlines"], "merchant_response": PARTY_DEADLINE,  # type: ignore[dict-item]
                         "customer_confirmation": PARTY_DEADLINE, "interception": PARTY_DEADLINE,
                         "evidence": PARTY_DEADLINE, "payment_voucher": PARTY_DEADLINE, "appeal": "1h"}
    data["complaint_fee"] = {**data["complaint_fee"], "monthly_budget": 10**13}  # type: ignore[dict-item]
    data["routing"] = {**data["routing"], "lease": "30s"}  # type: ignore[dict-item]
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    load_policy(str(path))
    return path


# ---- one run --------------------------------------------------------------------------------------

def run_once(plan, *, faults: bool, amqp: str, console: Console, timeout: float) -> RunResult:
    """The plan's workload on a fresh private stack; with `faults`, under the controller."""
    label = "chaos" if faults else "reference"
    with workdir(f"chaos-{label}") as tmp:
        redis, pg, vhost = PrivateRedis(tmp), PrivatePostgres(tmp), RabbitVhost(amqp)
        try:
            redis.start()
            pg.create()
            vhost.create()
            return _run_on(plan, faults, tmp, redis, pg, vhost, console, timeout)
        finally:
            redis.stop()
            pg.destroy()
            vhost.delete()
            chaos_checks.close_connections()


def _run_on(plan, faults: bool, tmp: Path, redis: PrivateRedis, pg: PrivatePostgres, vhost: RabbitVhost,
            console: Console, timeout: float) -> RunResult:
    policy_path = write_policy(tmp / "policy.toml")
    port = free_port()
    env = child_env(OP_DATABASE_URL=pg.url, OP_BROKER_URL=redis.url, OP_INTAKE_URL=vhost.url,
                    OP_POLICY=str(policy_path), OP_API_PORT=str(port), OP_API_HOST="127.0.0.1",
                    OP_REDRIVE_AFTER="5")
    app = make_app(pg.url, redis.url, vhost.url, policy=load_policy(str(policy_path)), redrive_after=5.0)
    with app.db.connection_context():
        agents = [(stage, add_agent(f"chaos-s{stage}-{i}", stage, capacity=1000))
                  for stage, count in POOLS.items() for i in range(count)]
        supervisor = add_agent("chaos-supervisor", 4, supervisor=True, capacity=1000)
    app.db.close_all()  # type: ignore[attr-defined]
    stop = threading.Event()
    floor = Floor(plan.seed, f"http://127.0.0.1:{port}", agents, supervisor, stop.is_set)
    mailbox = Mailbox(app)
    parties = Parties(plan, mailbox, floor.on_floor)
    tap = Tap(vhost.url, parties.on_event)
    tap.declare()  # before anything is published
    watch = chaos_checks.Watch(pg.url)
    timeline: list[Fault] = []
    with Procs(tmp) as procs:
        stack = Stack(tmp, env, procs)
        for name in (*QUEUES, "intake", "scheduler", "api"):
            stack.start(name)
        threads = [threading.Thread(target=mailbox.run, args=(stop.is_set,), name="mailbox", daemon=True),
                   threading.Thread(target=tap.run, args=(stop.is_set,), name="tap", daemon=True)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        error = None
        try:
            _wait(lambda: watch.healthy(port), 120, "the API to answer /health", stack.check)
            for merchant, balance in plan.balances.items():
                mailbox.post("merchant.balance_changed", {"merchant_id": merchant, "balance": balance,
                                                          "currency": "CNY"}, f"chaos:balance:{merchant}:open")
            _wait(lambda: watch.processed("merchant.balance_changed") >= len(plan.balances), 180,
                  "the opening balances", stack.check)
            for thread in floor.threads():
                thread.start()
                threads.append(thread)
            published = _feed(plan, mailbox, parties, stop)
            threads.append(published)
            controller = None
            if faults:
                controller = threading.Thread(target=_control, args=(plan.seed, stack, redis, pg, port, watch,
                                                                     timeline, started, stop, published, console),
                                              name="controller", daemon=True)
                controller.start()
            _wait(lambda: not published.is_alive() and (controller is None or not controller.is_alive())
                  and watch.settled(len(plan.complaints), mailbox, tap, floor), timeout, "every ticket to finish",
                  stack.check, interval=1.0,
                  progress=lambda: _progress(console, watch, tap, started, len(plan.complaints), mailbox, floor))
        except BenchError as failure:
            error = str(failure)
            console.print(f"[red]{error}[/red]")
        finally:
            seconds = time.monotonic() - started
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
        ledger_check = chaos_checks.run_ledger_check(env)
    app.broker.close()
    watch.close()
    return RunResult(faults, seconds, timeline, *chaos_checks.read_tables(pg.url), tap.deliveries, ledger_check,
                     dict(floor.stats), dict(parties.did), {"redis": redis.restarts, "postgres": pg.restarts},
                     error)


def _wait(predicate: Callable[[], object], timeout: float, what: str, check: Callable[[], None],
          interval: float = 0.2, progress: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while not predicate():
        check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        if progress is not None and time.monotonic() - last > 15:
            last = time.monotonic()
            progress()
        time.sleep(interval)


def _progress(console: Console, watch, tap, started: float, tickets: int, mailbox, floor) -> None:
    counts = watch.states()
    console.print(f"[dim]  {time.monotonic() - started:5.0f}s  " +
                  ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; events {len(tap.deliveries)}[/dim]")
    if os.environ.get("OP_CHAOS_DEBUG"):
        console.print(f"[dim]     waiting for: {watch.waiting_for(tickets, mailbox, tap, floor)}; "
                      f"oldest: {watch.stuck()}[/dim]")


def _feed(plan, mailbox, parties, stop: threading.Event) -> threading.Thread:
    """Publish the complaints, at most RATE a second and WINDOW tickets unfinished."""
    def feed() -> None:
        for n, (message_id, body) in enumerate(plan.complaints):
            while not stop.is_set() and n - len(parties.terminal) >= WINDOW:
                time.sleep(0.05)
            if stop.is_set():
                return
            mailbox.post("complaint.submitted", body, f"chaos:{message_id}")
            time.sleep(1.0 / RATE)
    thread = threading.Thread(target=feed, name="feed", daemon=True)
    thread.start()
    return thread


# ---- the controller ---------------------------------------------------------------------------------

def fault_schedule(seed: int) -> list[str]:
    """The order of faults: stage workers most often, the scheduler every few, and once each the
    intake, Redis, the API and PostgreSQL, spread through the run; then workers and schedulers."""
    r = random.Random(f"{seed}:faults")
    specials = ["intake", "redis", "api", "postgres"]
    order: list[str] = []
    for special in specials:
        order += ["worker", "scheduler", "worker", special, "worker"]
    order += ["worker", "scheduler", "worker", "intake", "worker", "scheduler", "worker", "api"]
    r.shuffle(order[:3])
    return order


def _control(seed: int, stack: Stack, redis: PrivateRedis, pg: PrivatePostgres, port: int, watch,
             timeline: list[Fault], started: float, stop: threading.Event, feeding: threading.Thread,
             console: Console) -> None:
    r = random.Random(f"{seed}:controller")
    time.sleep(8.0)  # let the first tickets reach every stage
    for what in fault_schedule(seed):
        if stop.is_set():
            return
        if not feeding.is_alive() and what not in ("redis", "postgres") and timeline and \
                {"redis restart", "postgres restart"} <= {f.what for f in timeline}:
            return  # everything published and both servers restarted: let the tail finish in peace
        at = time.monotonic() - started
        if what == "worker":
            target = r.choice(QUEUES[:-1] if r.random() < 0.85 else QUEUES)
            fault = Fault(at, "SIGKILL", f"dramatiq workers.{target}", r.uniform(*DOWN_FOR))
        elif what in ("scheduler", "intake", "api"):
            target = what
            fault = Fault(at, "SIGKILL", f"disputes {what}", r.uniform(*DOWN_FOR))
        else:
            target = what
            fault = Fault(at, f"{what} restart", f"private {what}", SERVER_DOWN_FOR)
        console.print(f"  [yellow]{at:6.1f}s  {fault.what:<16} {fault.target}  (down {fault.down_for:.1f}s)[/yellow]")
        audit_before = watch.audit_count()
        t0 = time.monotonic()
        try:
            if what == "redis":
                redis.restart(fault.down_for)
            elif what == "postgres":
                pg.restart(fault.down_for)
            else:
                stack.kill(target)
                time.sleep(fault.down_for)
                stack.start(target)
        except Exception as error:  # noqa: BLE001 - a failed fault is reported, the soak goes on
            fault.what += f" (failed: {error})"
        timeline.append(fault)
        recovered = _recovered(watch, port, audit_before, stop, limit=90)
        fault.recovered_after = None if recovered is None else recovered - t0
        if stop.wait(r.uniform(*FAULT_GAP)):
            return


def _recovered(watch, port: int, audit_before: int | None, stop: threading.Event, limit: float) -> float | None:
    """When the API answered /health again and a new change was committed (None: not within `limit`)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not stop.is_set():
        count = watch.audit_count()
        if watch.healthy(port) and count is not None and (audit_before is None or count > audit_before
                                                          or not watch.stuck()):
            return time.monotonic()
        time.sleep(0.2)
    return None


# ---- the soak -----------------------------------------------------------------------------------------

def run_chaos(*, seed: int = 1, tickets: int = 2000, json_path: str | Path | None = None,
              console: Console | None = None, amqp: str | None = None, timeout: float | None = None) -> dict:
    """Both runs, the checks, the report; returns the JSON-ready result (``ok`` false when an
    invariant failed)."""
    console = console or Console()
    amqp = amqp or os.environ.get("OP_BENCH_AMQP") or DEFAULT_AMQP
    timeout = timeout or max(300.0, tickets * 0.5)
    categories = list(load_policy(None).codes["category"])
    plan = make_plan(seed, tickets, categories)
    began = time.monotonic()
    console.print(f"[bold]chaos soak[/bold] seed {seed}, {tickets} tickets — run 1: fault-free reference")
    reference = run_once(plan, faults=False, amqp=amqp, console=console, timeout=timeout)
    console.print("run 2: the same workload under faults")
    chaos = run_once(plan, faults=True, amqp=amqp, console=console, timeout=timeout)
    data = chaos_checks.report(plan, reference, chaos, console, time.monotonic() - began)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return data
