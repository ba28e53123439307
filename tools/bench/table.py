"""Printing the benchmarks' table (rich) and their JSON."""
from __future__ import annotations

import math
import os
import platform
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from tools.bench.core import Outcome


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "ratio" or abs(value) < 10:
        text = f"{value:.2f}"
    else:
        text = f"{value:,.0f}"
    return text


def render(outcomes: list[Outcome], failures: dict[str, str], console: Console, *, quick: bool) -> None:
    title = f"disputes bench{' --quick (targets not asserted)' if quick else ''}"
    table = Table("benchmark", "metric", "median", "baseline", "ratio", "target", "met", title=title)
    for outcome in outcomes:
        for row in outcome.rows:
            median = f"{_fmt(row.median)} {row.unit}".strip()
            baseline = f"{_fmt(row.baseline)} ({row.baseline_label})" if row.baseline is not None else "–"
            met = "–" if row.met is None else ("[green]yes[/green]" if row.met else "[red]no[/red]")
            table.add_row(row.benchmark, row.metric, median, baseline, _fmt(row.ratio, "ratio"), row.target, met)
    for name, problem in failures.items():
        table.add_row(name, "[red]failed[/red]", problem[:80], "–", "–", "–", "[red]no[/red]")
    console.print(table)
    busy = busy_note()
    if busy:
        console.print(f"[yellow]{busy}[/yellow]")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def busy_note() -> str:
    """A warning when something else kept the machine busy: the figures are then pessimistic."""
    load = load_average()
    cpus = os.cpu_count() or 1
    if load and load[1] > 1.5 * cpus:
        return (f"load average {load[1]:.1f} over 5 min on {cpus} CPUs: other work shared the machine, "
                "so absolute figures are pessimistic (ratios to same-run baselines less so)")
    return ""


def to_json(outcomes: list[Outcome], failures: dict[str, str], *, quick: bool) -> dict[str, object]:
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1_5_15": load_average(), "busy": busy_note() or None},
        "benchmarks": {o.name: {"seconds": round(o.seconds, 1), "rows": [r.as_json() for r in o.rows],
                                "details": o.details} for o in outcomes},
        "failures": failures,
    }
