"""What one ``disputes demo`` run did: built by `tools.demo`, shown by `tools.simulation.summary`."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DemoResult:
    """What a demo run did; `all_terminal` is False when some ticket was still open at the end."""

    report: dict
    all_terminal: bool
    tickets: int
    admitted: int
    elapsed: float
    timed_out: bool
    #: The merchants' answer shares (fractions) and the answers dealt out per complaint.
    shares: dict[str, float] = field(default_factory=dict)
    planned: dict[str, int] = field(default_factory=dict)
    #: Per merchant answer: tickets, resolved_without_agent (and resolved_by), to_floor, withdrawn, open.
    by_option: dict[str, dict] = field(default_factory=dict)
    #: The ledger's movements by kind: {"count", "amount"} (minor units).
    money: dict[str, dict[str, int]] = field(default_factory=dict)
    #: How often each path beyond the straight line ran (from the audit trail and approvals).
    paths: dict[str, int] = field(default_factory=dict)
    #: What the simulated world did (answers, vouchers, appeals, surveys...).
    world: dict[str, int] = field(default_factory=dict)
    #: Every problem `disputes ledger` finds (empty: every invariant holds).
    problems: list[str] = field(default_factory=list)
    #: Messages published to ``op.intake``, by routing key (duplicates included), and the distinct
    #: ones (each message id once: the difference is the upstream retries the intake ignores).
    published: dict[str, int] = field(default_factory=dict)
    distinct: dict[str, int] = field(default_factory=dict)
    #: Events the downstream consumer received from ``op.events``, by routing key.
    events_received: dict[str, int] = field(default_factory=dict)
    #: Events of one ticket that arrived after a later one (must be 0), and exact repeats.
    out_of_order: int = 0
    repeated: int = 0
    agents: dict[str, int] = field(default_factory=dict)
    #: Warnings and errors logged by the system while the demo ran, by logger.
    logged: dict[str, int] = field(default_factory=dict)
    #: The SQLite file kept after the run (``--keep``), else None.
    database: str | None = None

    @property
    def books_ok(self) -> bool:
        return not self.problems

    @property
    def ok(self) -> bool:
        return self.all_terminal and self.books_ok
