"""Small statistics the report sections share: percentiles, summaries of durations, shares."""
from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Iterable, Mapping


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least `pct`% of values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summary(values: list[float]) -> dict[str, object]:
    """``{"count", "median_s", "p95_s"}`` of durations in seconds (None when there are none)."""
    return {"count": len(values), "median_s": median(values), "p95_s": percentile(values, 95)}


def share(part: int, whole: int) -> float | None:
    """`part` / `whole` rounded to 4 places; None when `whole` is 0 (nothing to share)."""
    return round(part / whole, 4) if whole else None


def counted(counts: Mapping[str, int] | Counter[str]) -> dict[str, int]:
    """A plain dict, most frequent first (ties by key), for stable JSON."""
    return {k: int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 2) if values else None


def duration_label(seconds: float | None) -> str:
    """``42.50 s``, ``3m 05s``, ``2h 10m`` or ``3d 04h``; ``-`` for nothing."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d {int(seconds % 86400 // 3600):02d}h"


def percent_label(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
