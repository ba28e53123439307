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
from models.base import utcnow
from disputes.settings import QUEUES
from policy import default_policy_dict, load_policy
from tools.bench import chaos_checks, leftovers
from tools.bench.chaos_run import Fault, RunResult
from tools.bench.chaos_world import Floor, Parties, Tap, make_plan
from tools.bench.core import DISPUTES, DRAMATIQ, BenchError, Procs, child_env, make_app, tail, workdir
from tools.bench.chaos_hosts import Hosts, OneHost
from tools.bench.chaos_network import HEAL_BOUND, World, network_fault, pick_host
from tools.bench.chaos_network import KINDS as NETWORK_KINDS
from tools.bench.private_servers import free_port
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

    def __init__(self, tmp: Path, env: dict[str, str], procs: Procs, hosts: OneHost | Hosts,
                 threads: int = 4) -> None:
        self.tmp, self.env, self.procs, self.hosts, self.threads = tmp, env, procs, hosts, threads
        self.running: dict[str, object] = {}

    def argv(self, name: str) -> list[str]:
        if name in QUEUES:
            argv = DRAMATIQ + [f"workers.{name}", "--queues", name, "--processes", "1", "--threads",
                               str(self.threads)]
        else:
            argv = DISPUTES + [name]
        return self.hosts.argv(name, argv)

    def start(self, name: str) -> None:
        self.running[name] = self.procs.start(name, self.argv(name), {**self.env, **self.hosts.urls(name)})

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

def run_once(plan, *, faults: bool, amqp: str, console: Console, timeout: float, network: bool = False) -> RunResult:
    """The plan's workload on a fresh private stack; with `faults`, under the controller; with
    `network`, as several hosts (`tools.bench.chaos_hosts.Hosts`) with network faults among the rest."""
    label = "chaos" if faults else "reference"
    with workdir(f"chaos-{label}") as tmp:
        hosts = Hosts(tmp, f"dc{os.getpid() % 10000}{'f' if faults else 'r'}") if network else OneHost(tmp, amqp)
        try:
            hosts.start()
            return _run_on(plan, faults, tmp, hosts, console, timeout)
        finally:
            hosts.close()
            chaos_checks.close_connections()


def _run_on(plan, faults: bool, tmp: Path, hosts: OneHost | Hosts, console: Console, timeout: float) -> RunResult:
    policy_path = write_policy(tmp / "policy.toml")
    port = free_port()
    here = hosts.urls()  # the servers as this process reaches them
    env = child_env(OP_POLICY=str(policy_path), OP_API_PORT=str(port), OP_API_HOST=hosts.api_bind,
                    OP_REDRIVE_AFTER="5")
    app = make_app(here["OP_DATABASE_URL"], here["OP_BROKER_URL"], here["OP_INTAKE_URL"],
                   policy=load_policy(str(policy_path)), redrive_after=5.0)
    with app.db.connection_context():
        agents = [(stage, add_agent(f"chaos-s{stage}-{i}", stage, capacity=1000))
                  for stage, count in POOLS.items() for i in range(count)]
        supervisor = add_agent("chaos-supervisor", 4, supervisor=True, capacity=1000)
    app.db.close_all()  # type: ignore[attr-defined]
    stop = threading.Event()
    api = hosts.api_base(port)
    floor = Floor(plan.seed, api, agents, supervisor, stop.is_set)
    mailbox = Mailbox(app)
    parties = Parties(plan, mailbox, floor.on_floor)
    tap = Tap(here["OP_INTAKE_URL"], parties.on_event)
    tap.declare()  # before anything is published
    watch = chaos_checks.Watch(here["OP_DATABASE_URL"])
    timeline: list[Fault] = []
    with Procs(tmp) as procs:
        stack = Stack(tmp, env, procs, hosts)
        for name in (*QUEUES, "intake", "scheduler", "api"):
            stack.start(name)
        threads = [threading.Thread(target=mailbox.run, args=(stop.is_set,), name="mailbox", daemon=True),
                   threading.Thread(target=tap.run, args=(stop.is_set,), name="tap", daemon=True)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        error = None
        try:
            _wait(lambda: watch.healthy(api), 120, "the API to answer /health", stack.check)
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
                world = World(stack, hosts, api, watch, timeline, started, stop, published, console)
                controller = threading.Thread(target=_control, args=(plan.seed, world), name="controller",
                                              daemon=True)
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
        ledger_check = chaos_checks.run_ledger_check({**env, **here})
        logs = chaos_checks.read_logs(tmp)
    app.broker.close()
    watch.close()
    return RunResult(faults, seconds, timeline, *chaos_checks.read_tables(here["OP_DATABASE_URL"]), tap.deliveries,
                     ledger_check, dict(floor.stats), dict(parties.did), hosts.restarts, error,
                     network=hosts.network is not None, logs=logs)


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

def fault_schedule(seed: int, network: bool = False) -> list[str]:
    """The order of faults: stage workers most often, the scheduler every few, and once each the
    intake, Redis, the API and PostgreSQL, spread through the run; then workers and schedulers.
    With `network`, a network fault (`tools.bench.chaos_network`) follows each of those."""
    r = random.Random(f"{seed}:faults")
    specials = ["intake", "redis", "api", "postgres"]
    order: list[str] = []
    for special in specials:
        order += ["worker", "scheduler", "worker", special, "worker"]
    order += ["worker", "scheduler", "worker", "intake", "worker", "scheduler", "worker", "api"]
    r.shuffle(order[:3])
    if network:
        kinds = list(NETWORK_KINDS) * 4
        r.shuffle(kinds)
        steps = [(kinds.pop(), pick_host(r)) for _ in range(min(len(order), len(kinds)))]
        # The API's host is cut off early, both ways and one way: /health and /metrics are asked then.
        for cut in ("partition", "one-way"):
            first = next(i for i, (kind, _) in enumerate(steps) if kind == cut)
            steps[first] = (cut, "api")
        order = [step for fault, net in zip(order, steps + [None] * len(order))
                 for step in (fault, f"net:{net[0]}:{net[1]}" if net else None) if step]
    return order


def _control(seed: int, world: World) -> None:
    r = random.Random(f"{seed}:controller")
    time.sleep(8.0)  # let the first tickets reach every stage
    hosts, stack, watch, stop = world.hosts, world.stack, world.watch, world.stop
    for what in fault_schedule(seed, network=hosts.network is not None):
        if stop.is_set():
            return
        if not world.feeding.is_alive() and what not in ("redis", "postgres") and world.timeline and \
                {"redis restart", "postgres restart"} <= {f.what for f in world.timeline}:
            return  # everything published and both servers restarted: let the tail finish in peace
        at = time.monotonic() - world.started
        audit_before = watch.audit_count()
        if what.startswith("net:"):
            _, kind, host = what.split(":")
            fault = network_fault(world, r, host, kind)
            world.timeline.append(fault)
            healed = time.monotonic()
            recovered = _recovered(watch, world.api, audit_before, stop, limit=HEAL_BOUND + 60,
                                   committed_before=utcnow().replace(tzinfo=None))  # stored naive UTC
            fault.recovered_after = None if recovered is None else recovered - healed
        else:
            began = time.monotonic()
            fault = _process_fault(r, what, at, hosts, stack, world.console)
            world.timeline.append(fault)
            recovered = _recovered(watch, world.api, audit_before, stop, limit=90)
            fault.recovered_after = None if recovered is None else recovered - began
        if stop.wait(r.uniform(*FAULT_GAP)):
            return


def _process_fault(r: random.Random, what: str, at: float, hosts, stack: Stack, console: Console) -> Fault:
    """SIGKILL a process and start it again after a moment, or restart a server."""
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
    try:
        if what == "redis":
            hosts.redis.restart(fault.down_for)
        elif what == "postgres":
            hosts.pg.restart(fault.down_for)
        else:
            stack.kill(target)
            time.sleep(fault.down_for)
            stack.start(target)
    except Exception as error:  # noqa: BLE001 - a failed fault is reported, the soak goes on
        fault.what += f" (failed: {error})"
    return fault


def _recovered(watch, api: str, audit_before: int | None, stop: threading.Event, limit: float,
               committed_before=None) -> float | None:
    """When the API answered /health again and a new change was committed (None: not within `limit`);
    with `committed_before`, also when nothing committed before then is still waiting to move on."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not stop.is_set():
        count = watch.audit_count()
        if watch.healthy(api) and count is not None and (audit_before is None or count > audit_before
                                                         or not watch.stuck()) \
                and (committed_before is None or watch.moved_on(committed_before)):
            return time.monotonic()
        time.sleep(0.2)
    return None


# ---- the soak -----------------------------------------------------------------------------------------

def run_chaos(*, seed: int = 1, tickets: int = 2000, json_path: str | Path | None = None,
              console: Console | None = None, amqp: str | None = None, timeout: float | None = None,
              network: bool = False) -> dict:
    """Both runs, the checks, the report; returns the JSON-ready result (``ok`` false when an
    invariant failed). With `network`, each run is several hosts (network namespaces) and the
    faults include the network's (`tools.bench.chaos_network`)."""
    console = console or Console()
    amqp = amqp or os.environ.get("OP_BENCH_AMQP") or DEFAULT_AMQP
    # The network soak holds each of its extra faults for seconds and lets the system catch up after.
    timeout = timeout or (max(900.0, tickets * 0.5 + 600) if network else max(300.0, tickets * 0.5))
    categories = list(load_policy(None).codes["category"])
    plan = make_plan(seed, tickets, categories)
    began = time.monotonic()
    layout = "several hosts on a faulted network" if network else "one host"
    # A plain `kill` (SIGTERM) cleans up as Ctrl-C does; SIGKILL leaves it to the next run's sweep.
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    with leftovers.recorded():
        console.print(f"[bold]chaos soak[/bold] seed {seed}, {tickets} tickets, {layout} — run 1: fault-free reference")
        reference = run_once(plan, faults=False, amqp=amqp, console=console, timeout=timeout, network=network)
        console.print("run 2: the same workload under faults")
        chaos = run_once(plan, faults=True, amqp=amqp, console=console, timeout=timeout, network=network)
    signal.signal(signal.SIGTERM, previous)
    data = chaos_checks.report(plan, reference, chaos, console, time.monotonic() - began)
    data["network"] = network
    if json_path is not None:
        Path(json_path).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return data


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
