"""What one run of the chaos soak produced: its faults and its tables, as plain data.

Built by `tools.bench.chaos`, checked by `tools.bench.chaos_checks`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """One fault the controller injected, and when the system was serving again."""

    at: float
    what: str
    target: str
    down_for: float
    recovered_after: float | None = None
    #: What the soak saw while the fault lasted (a network fault behind the API: /health, /metrics).
    observed: dict[str, Any] | None = None

    @property
    def network(self) -> bool:
        return self.target.startswith("link ")

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "at_s": round(self.at, 2), "what": self.what, "target": self.target, "down_s": round(self.down_for, 2),
            "recovered_after_s": None if self.recovered_after is None else round(self.recovered_after, 2)}
        if self.observed is not None:
            data["observed"] = self.observed
        return data


@dataclass
class RunResult:
    """What one run produced: the database's tables as plain rows, the tap's deliveries, figures."""

    faults: bool
    seconds: float
    timeline: list[Fault]
    tickets: list[dict]
    audit: list[dict]
    outbox: list[dict]
    ledger: list[dict]
    dispatches: dict[str, int]
    rejected: list[dict]
    deliveries: list[tuple[str, dict]]
    ledger_check: tuple[int, str]
    floor: dict[str, int]
    parties: dict[str, int]
    restarts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    #: Several hosts on a network the soak faulted (``--network``).
    network: bool = False
    #: Per process log (name → lines), for the check that an outage is logged once, not every beat.
    logs: dict[str, list[str]] = field(default_factory=dict)
