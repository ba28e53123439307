"""The errors the project raises on purpose, in one shallow tree.

``DisputesError`` is the root; under it ``Refused`` marks what can never succeed
as sent — a decision on a version that is gone, a ticket that does not exist, an
action the transition table does not allow, a payload that does not fit its
kind. A worker that meets a `Refused` records its text as the dispatch's outcome
and marks it done instead of retrying (`workers.base`); the desk turns the same
errors into the 404/409 of SPEC §6. Anything else is a fault: retried or
reported, never recorded as a refusal.

This module imports nothing of the project, so every layer can use it.
"""
from __future__ import annotations


class DisputesError(Exception):
    """Base of every error the project raises on purpose."""


class Refused(DisputesError):
    """A message or decision that can never succeed as sent: record why and do not retry it."""


class VersionConflict(Refused):
    """The ticket changed since it was read (another agent, worker or message got there first)."""


class UnknownTicket(Refused):
    """No ticket has this id or reference."""


class BadPayload(Refused):
    """A dispatch's payload does not fit its kind (a hand-written or corrupted row): resending cannot help."""


class NotAllowed(Refused):
    """No row of the table lets this actor take this action in this state (or every guard said no)."""

    def __init__(self, state: str | None, action: str, role: str, failed: list[str] | None = None,
                 refusals: list[str] | None = None) -> None:
        #: `failed`: the names of the guards that said no, in table order; `refusals`: what those
        #: guards tell the person who asked (their ``refusal`` texts, formatted, without repeats).
        self.state, self.action, self.role, self.failed = state, action, role, failed or []
        self.refusals: list[str] = list(dict.fromkeys(refusals or []))
        self.guarded = bool(failed)
        why = ("not " + " / not ".join(name.replace("_", " ") for name in self.failed) if self.failed
               else "it is not an action of this state for this actor")
        super().__init__(f"'{action}' by {role} is not allowed in state '{state}': {why}")

    @property
    def reason(self) -> str:
        """Why, in words for the agent or party who asked: the failed guards' texts, else the state."""
        return "; ".join(self.refusals) if self.refusals else f"it is not allowed in state '{self.state}'"


__all__ = ["BadPayload", "DisputesError", "NotAllowed", "Refused", "UnknownTicket", "VersionConflict"]
