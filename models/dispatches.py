"""What a dispatch carries: one small typed object per kind, shared by its writers and its handler.

A `models.outbox.Dispatch` row keeps its payload as JSON; these types are the
only code that writes or reads that JSON. The keys are those rows have always
had, so rows stored before these types existed still load:

- ``arrive``: `Arrival` — written by `models.workflow` when a ticket enters a stage;
- ``act``: `AgentDecision` — written by `desk.actions` for an agent's decision;
- ``wake``: `WakeUp` — written by `scheduler.timers` when a deadline falls due;
- ``deliver``: `NotificationDelivery` — written by `models.notification` of the previous
  version; a notification is now its own work item (no dispatch row), but rows and messages of
  this kind still in flight during an upgrade are delivered (`workers.delivery`).

`workers.base.StageWorker` handles the first three, `workers.delivery` the last.

A payload that does not fit its kind raises `models.errors.BadPayload` (a
`Refused`: the worker records it rather than retrying it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, TypeVar, Union

from models.errors import BadPayload


@dataclass(frozen=True)
class Arrival:
    """The ticket entered the stage of the queue, at this version (push routing offers it to an agent)."""

    kind: ClassVar[str] = "arrive"
    ticket_id: int
    version: int

    def to_json(self) -> dict[str, Any]:
        return {"ticket_id": self.ticket_id, "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Arrival":
        return _read(cls, lambda: cls(int(data["ticket_id"]), int(data["version"])))


@dataclass(frozen=True)
class AgentDecision:
    """An agent's decision accepted by the API, for the stage worker to apply at `expected_version`.

    `role` is ``"supervisor"`` for an approval; None means the agent of the queue's stage."""

    kind: ClassVar[str] = "act"
    ticket_id: int
    agent_id: int
    action: str
    expected_version: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    qc: dict[str, Any] | None = None
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ticket_id": self.ticket_id, "agent_id": self.agent_id, "action": self.action,
                                "expected_version": self.expected_version, "params": dict(self.params),
                                "qc": dict(self.qc) if self.qc is not None else None}
        if self.role is not None:  # a stage agent's decision has never carried the key
            data["role"] = self.role
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AgentDecision":
        def build() -> AgentDecision:
            expected, qc, params = data.get("expected_version"), data.get("qc"), data.get("params") or {}
            if not isinstance(params, dict) or not (qc is None or isinstance(qc, dict)):
                raise TypeError("params and qc must be objects")
            return cls(int(data["ticket_id"]), int(data["agent_id"]), str(data["action"]),
                       None if expected is None else int(expected), dict(params),
                       None if qc is None else dict(qc), data.get("role") or None)
        return _read(cls, build)


class _NamesOneRow:
    """A payload that names one row by its id, under the key `key`."""

    kind: ClassVar[str]
    key: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return {self.key: getattr(self, self.key)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        return _read(cls, lambda: cls(int(data[cls.key])))  # type: ignore[call-arg]


@dataclass(frozen=True)
class WakeUp(_NamesOneRow):
    """A timer fell due: the worker applies its deadline if the ticket is still where the timer was set."""

    kind: ClassVar[str] = "wake"
    key: ClassVar[str] = "timer_id"
    timer_id: int


@dataclass(frozen=True)
class NotificationDelivery(_NamesOneRow):
    """A pending `models.notification.Notification` to deliver through its channel (written by the
    previous version only: read, never written now)."""

    kind: ClassVar[str] = "deliver"
    key: ClassVar[str] = "notification_id"
    notification_id: int


Payload = Union[Arrival, AgentDecision, WakeUp, NotificationDelivery]
P = TypeVar("P", Arrival, AgentDecision, WakeUp, NotificationDelivery)

#: The payload type of each dispatch kind.
KINDS: dict[str, type[Payload]] = {t.kind: t for t in (Arrival, AgentDecision, WakeUp, NotificationDelivery)}


def payload_from_json(kind: str, data: object) -> Payload:
    """The typed payload of a dispatch of `kind` stored as `data`; `BadPayload` when it does not fit."""
    if kind not in KINDS:
        raise BadPayload(f"no dispatch kind {kind!r} (known: {', '.join(KINDS)})")
    if not isinstance(data, Mapping):
        raise BadPayload(f"the payload of a {kind!r} dispatch is not an object: {data!r}"[:200])
    return KINDS[kind].from_json(data)


def _read(cls: type[P], build: Any) -> P:
    try:
        return build()
    except (KeyError, TypeError, ValueError) as problem:
        raise BadPayload(f"bad {cls.kind!r} payload: {type(problem).__name__} {problem}"[:200]) from problem


__all__ = ["AgentDecision", "Arrival", "KINDS", "NotificationDelivery", "Payload", "WakeUp", "payload_from_json"]
