"""`Change`: everything a guard or an effect may look at while one action is applied."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from models.ticket import Ticket

if TYPE_CHECKING:
    from policy import Policy


class Role(StrEnum):
    """Who may take an action: the contract's actor kinds, agents by stage."""

    SYSTEM = "system"
    SCHEDULER = "scheduler"
    USER = "user"
    MERCHANT = "merchant"
    STAGE1 = "stage1"
    STAGE2 = "stage2"
    STAGE3 = "stage3"
    STAGE4 = "stage4"
    SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Actor:
    """One concrete actor: a role, plus the agent's id when an agent acts."""

    role: Role
    agent_id: int | None = None

    @property
    def label(self) -> str:
        """The contract's ``actor`` string: ``system``, ``scheduler``, ``user``, ``merchant``, ``agent:<id>``."""
        return f"agent:{self.agent_id}" if self.agent_id is not None else str(self.role)

    @classmethod
    def agent(cls, stage: int, agent_id: int) -> "Actor":
        return cls(Role(f"stage{stage}"), agent_id)


@dataclass
class Change:
    """One action being applied to one ticket inside one transaction."""

    ticket: Ticket
    action: str
    actor: Actor
    params: dict
    policy: "Policy"
    now: datetime
    qc: dict | None = None
    #: What caused the change (``message:<id>``, ``dispatch:<id>``), kept on the audit row.
    cause: str | None = None
    #: False when guards are only asked "would this be allowed?" (the desk's checks): then money guards
    #: read balances without locking them, so a request never waits on a worker's transaction.
    deciding: bool = True
    #: Set once a row matched: the state the ticket moves to and its version after.
    to_state: str = ""
    #: Facts for the event's ``data`` (liability, remedy, amounts, due times...).
    data: dict = field(default_factory=dict)
    #: Extra ``op.events`` messages (``ledger.*``) effects want published with this change.
    extra_events: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def from_state(self) -> str | None:
        return self.ticket.state

    @property
    def next_version(self) -> int:
        return (self.ticket.version or 0) + 1
