"""The suite of ``disputes bench``: the five benchmarks, run in order, one table and one JSON file.

The table of what each measures is in the package's docstring (`tools.bench`). The package itself
imports nothing, so that ``dramatiq workers.stageN tools.bench.chain_entry`` and the benchmarks'
child processes (``python -m tools.bench.processes``) load only what they run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from tools.bench import api, intake, pipeline, scale, timers
from tools.bench.core import BenchError, Outcome, Servers
from tools.bench.table import render, to_json

__all__ = ["BENCHMARKS", "BenchError", "run_benchmarks"]

#: The benchmarks in the order they run.
BENCHMARKS: dict[str, Callable[[Servers, bool], Outcome]] = {
    "pipeline": pipeline.run, "scheduler": timers.run, "intake": intake.run, "api": api.run, "scale": scale.run}


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
