"""The ticket states of the contract (SPEC §3) and what each one means to the floor.

Everything that depends on "which state is this" — who the ticket waits on,
which queue wakes it, whether agents see it — is read from `STATES`, so a new
state is one row here plus its rows in `models.machine`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    NEGOTIATING = "negotiating"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    INTERCEPTING = "intercepting"
    AWAITING_TAKEOVER = "awaiting_takeover"
    STAGE1 = "stage1"
    AWAITING_EVIDENCE = "awaiting_evidence"
    STAGE2 = "stage2"
    STAGE3 = "stage3"
    STAGE4 = "stage4"
    AWAITING_PAYMENT = "awaiting_payment"
    RESOLVED = "resolved"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class StateInfo:
    """How the floor treats tickets in one state."""

    #: The agent pool that works the ticket ("stage1".."stage4"), None when hidden or final.
    stage: str | None
    #: Whose move it is (SPEC §6 ``waiting_on``) when no evidence request says otherwise.
    waiting_on: str
    #: The dramatiq queue that receives this state's deadline wake-ups.
    wake_queue: str | None
    #: No further change is possible (``closed`` still accepts an appeal: see the machine).
    terminal: bool = False

    @property
    def visible(self) -> bool:
        return self.stage is not None


STATES: dict[State, StateInfo] = {
    State.NEGOTIATING: StateInfo(None, "merchant", "negotiation"),
    State.AWAITING_CONFIRMATION: StateInfo(None, "user", "negotiation"),
    State.INTERCEPTING: StateInfo(None, "logistics", "negotiation"),
    State.AWAITING_TAKEOVER: StateInfo("stage1", "stage1", None),
    State.STAGE1: StateInfo("stage1", "stage1", None),
    State.AWAITING_EVIDENCE: StateInfo(None, "user", "stage2"),
    State.STAGE2: StateInfo("stage2", "stage2", None),
    State.STAGE3: StateInfo("stage3", "stage3", None),
    State.STAGE4: StateInfo("stage4", "stage4", None),
    State.AWAITING_PAYMENT: StateInfo(None, "merchant", "stage4"),
    State.RESOLVED: StateInfo(None, "nobody", None, terminal=True),
    State.CLOSED: StateInfo(None, "nobody", None, terminal=True),
    State.WITHDRAWN: StateInfo(None, "nobody", None, terminal=True),
}

#: The states the floor's four pools work, in stage order.
STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4")
TERMINAL_STATES: frozenset[State] = frozenset(s for s, i in STATES.items() if i.terminal)
OPEN_STATES: frozenset[State] = frozenset(STATES) - TERMINAL_STATES


def stage_of(state: str) -> str | None:
    """The agent pool that works tickets in `state`, if any."""
    return STATES[State(state)].stage
