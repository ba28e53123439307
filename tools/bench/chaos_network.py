"""The network's faults in the soak (``disputes bench chaos --network``), and what is observed while
each lasts.

A fault is set on one host's link to the servers for a few seconds, then healed:

* ``latency``: 300 ms ± 100 ms each way (jittered, so packets also arrive out of order);
* ``loss``: 5 % of packets dropped each way;
* ``reorder``: a quarter of packets sent ahead of the rest (10 ms delay for the others);
* ``partition``: nothing crosses either way; connections stay open and hear nothing (no reset);
* ``one-way``: the host's packets arrive, the servers' answers never do — the half-open connection.

While the API's host is cut off, the soak asks ``/health`` (it must answer within its deadline and
name the dependencies it cannot reach) and ``/metrics`` (it must answer within its deadline too).
After the heal, the fault's recovery is the time until the API is healthy and everything committed
before the heal has moved on — each dispatch applied, each event published, each due timer fired —
which must come within `HEAL_BOUND` seconds.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from disputes.settings import QUEUES
from tools.bench.chaos_run import Fault
from tools.bench.netns import Impairment

#: The longest a fault lasts before it is healed (uniform), seconds.
HOLD = (5.0, 15.0)
IMPAIRMENTS = {
    "latency": Impairment(delay_ms=300, jitter_ms=100),
    "loss": Impairment(loss_pct=5),
    "reorder": Impairment(delay_ms=10, reorder_pct=25),
}
KINDS = (*IMPAIRMENTS, "partition", "one-way")
#: After a heal, everything committed before it has moved on within this many seconds: the
#: reconciler's re-send (5 s in the soak), a connection's detection of a dead peer (TCP keepalive:
#: 10 s idle + 3 × 5 s probes on PostgreSQL; Redis' socket timeout), the scheduler's lease (10 s), a
#: claim's lease (30 s in the soak), with room for the backlog that built up meanwhile.
HEAL_BOUND = 120.0
#: /health and /metrics must answer within this, whatever the network does behind the API.
PROBE_DEADLINE = 5.0


@dataclass
class World:
    """What the controller acts on and watches."""

    stack: Any
    hosts: Any
    api: str
    watch: Any
    timeline: list[Fault]
    started: float
    stop: threading.Event
    feeding: threading.Thread
    console: Console


def pick_host(r: random.Random) -> str:
    """Stage workers most often (five queues), the API, the intake and the scheduler now and then."""
    roll = r.random()
    if roll < 0.55:
        return r.choice(QUEUES)
    if roll < 0.75:
        return "api"
    return r.choice(("intake", "scheduler"))


def network_fault(world: World, r: random.Random, host: str, kind: str) -> Fault:
    """Set `kind` on `host`'s link, hold it, observe, heal; returns the fault with its observations."""
    network = world.hosts.network
    hold = r.uniform(*HOLD)
    fault = Fault(time.monotonic() - world.started, kind, f"link {host}", hold)
    if kind in IMPAIRMENTS:
        fault.what = f"{kind} ({IMPAIRMENTS[kind].describe()})"
        network.impair(host, IMPAIRMENTS[kind])
    elif kind == "partition":
        network.partition(host)
    else:
        network.one_way(host)
    world.console.print(f"  [magenta]{fault.at:6.1f}s  {fault.what:<32} {fault.target}  ({hold:.1f}s)[/magenta]")
    began = time.monotonic()
    if host == "api" and kind in ("partition", "one-way"):
        fault.observed = observe_probes(world.api, expect_down=True)
        world.console.print(f"             while cut off: {fault.observed}")
    world.stop.wait(max(0.0, hold - (time.monotonic() - began)))
    network.heal(host)
    return fault


def observe_probes(api: str, *, expect_down: bool) -> dict[str, object]:
    """Ask /health and /metrics as a load balancer and Prometheus would, and time the answers.

    With the API cut off from its dependencies, /health is given a moment (a pooled connection
    only notices when it is used) and must then say 503 naming both."""
    import requests
    seen: dict[str, object] = {}
    time.sleep(1.0)
    for path in ("/health", "/metrics"):
        t0 = time.monotonic()
        try:
            response = requests.get(api + path, timeout=PROBE_DEADLINE * 3)
            seen[path] = {"status": response.status_code, "seconds": round(time.monotonic() - t0, 2)}
            if path == "/health":
                body = response.json()
                seen[path]["down"] = sorted(k for k, v in body.items()  # type: ignore[index]
                                                if v == "down" and k != "status")  # "status" is the verdict
        except requests.RequestException as error:
            seen[path] = {"status": None, "seconds": round(time.monotonic() - t0, 2), "error": type(error).__name__}
    return seen


def probes_ok(observed: dict[str, object]) -> bool:
    """/health answered 503 naming the database and the broker, /metrics answered, both in time."""
    health, metrics = observed.get("/health") or {}, observed.get("/metrics") or {}
    return (health.get("status") == 503 and {"database", "broker"} <= set(health.get("down") or ())  # type: ignore[union-attr]
            and health.get("seconds", 99) <= PROBE_DEADLINE  # type: ignore[union-attr, operator]
            and metrics.get("status") == 200 and metrics.get("seconds", 99) <= PROBE_DEADLINE)  # type: ignore[union-attr, operator]
