"""What one run of the chaos soak produced: its faults and its tables, as plain data.

Built by `tools.bench.chaos`, checked by `tools.bench.chaos_checks`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Fault:
    """One fault the controller injected, and when the system was serving again."""

    at: float
    what: str
    target: str
    down_for: float
    recovered_after: float | None = None

    def as_json(self) -> dict[str, object]:
        return {"at_s": round(self.at, 2), "what": self.what, "target": self.target, "down_s": round(self.down_for, 2),
                "recovered_after_s": None if self.recovered_after is None else round(self.recovered_after, 2)}


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
