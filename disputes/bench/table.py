"""Printing the benchmarks' table (rich) and their JSON."""
from __future__ import annotations

import math
import os
import platform
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from disputes.bench.core import Outcome


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


def to_json(outcomes: list[Outcome], failures: dict[str, str], *, quick: bool) -> dict[str, object]:
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "benchmarks": {o.name: {"seconds": round(o.seconds, 1), "rows": [r.as_json() for r in o.rows],
                                "details": o.details} for o in outcomes},
        "failures": failures,
    }
