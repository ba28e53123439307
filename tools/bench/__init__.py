"""``disputes bench``: the five benchmarks of issue 8, each against a baseline measured in the same run.

| name | measures | baseline | target |
|---|---|---|---|
| ``pipeline`` | state changes/s of whole lifecycles, workers as processes (Redis + PostgreSQL) | no-op dramatiq chain, same processes | ≥ 0.5 × |
| ``scheduler`` | due timers/s turned into messages with 1,000,000 pending; lag p99; RSS | raw SELECT + enqueue | ≥ 5,000/s, ≤ 1 s, flat |
| ``intake`` | complaints/s from RabbitMQ into PostgreSQL, and duplicates/s | no-op kombu consumer | ≥ 2,000/s |
| ``api`` | p99 of claim + action for 100 concurrent agents over HTTP | no-op WSGI app, same server | ≤ 50 ms |
| ``scale`` | cost of one state change with 1,000,000 vs 10,000 tickets stored | the same at 10,000 | ≤ 1.2 |

Every figure is the median of several runs; ``--quick`` shrinks the sizes (a CI smoke check, targets
not asserted). Each benchmark uses its own PostgreSQL database and Redis db, on loopback servers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from tools.bench.core import BenchError, Outcome, Servers
from tools.bench.table import render, to_json

__all__ = ["BENCHMARKS", "BenchError", "run_benchmarks"]


def _pipeline(servers: Servers, quick: bool) -> Outcome:
    from tools.bench import pipeline
    return pipeline.run(servers, quick)


def _scheduler(servers: Servers, quick: bool) -> Outcome:
    from tools.bench import timers
    return timers.run(servers, quick)


def _intake(servers: Servers, quick: bool) -> Outcome:
    from tools.bench import intake
    return intake.run(servers, quick)


def _api(servers: Servers, quick: bool) -> Outcome:
    from tools.bench import api
    return api.run(servers, quick)


def _scale(servers: Servers, quick: bool) -> Outcome:
    from tools.bench import scale
    return scale.run(servers, quick)


#: The benchmarks in the order they run.
BENCHMARKS: dict[str, Callable[[Servers, bool], Outcome]] = {
    "pipeline": _pipeline, "scheduler": _scheduler, "intake": _intake, "api": _api, "scale": _scale}


def run_benchmarks(*, quick: bool = False, only: list[str] | None = None, json_path: str | Path | None = None,
                   console: Console | None = None, servers: Servers | None = None) -> dict[str, object]:
    """Run the named benchmarks (all by default), print the table, write the JSON; return it.
    A benchmark that fails is reported as failed and the others still run."""
    console = console or Console()
    servers = servers or Servers.from_env()
    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise BenchError(f"no benchmark {', '.join(unknown)} (there are {', '.join(BENCHMARKS)})")
    outcomes: list[Outcome] = []
    failures: dict[str, str] = {}
    for name in names:
        console.print(f"[dim]bench {name}{' (quick)' if quick else ''}…[/dim]")
        started = time.perf_counter()
        try:
            outcome = BENCHMARKS[name](servers, quick)
        except Exception as error:  # noqa: BLE001 - one failed benchmark must not hide the others
            failures[name] = f"{type(error).__name__}: {error}"
            console.print(f"[red]bench {name} failed: {failures[name]}[/red]")
            continue
        outcome.seconds = time.perf_counter() - started
        outcomes.append(outcome)
    render(outcomes, failures, console, quick=quick)
    data = to_json(outcomes, failures, quick=quick)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return data
