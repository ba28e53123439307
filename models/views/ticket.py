"""The ticket as agents and tools see it: one JSON-ready dict, shared by the API and the CLI.

``GET /tickets/{id}``, ``POST /me/claim`` and ``disputes ticket show --json``
must agree to the key, so the shape is built here, without Flask, from the
models and the policy. Derived facts — whose move it is, the next deadline,
the SLA, what the caller may click — are computed on read from the tables
that own them (evidence requests, timers, the audit trail, the transition
table), never stored twice.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import peewee

from models.views.sla import FEEDBACK_ACTIONS, iso, ticket_sla
from models.agent import Agent
from models.audit import TicketEvent
from models.approval import Approval, pending_approval
from models.base import UtcDateTimeField
from models.change import Actor, Role
from models.evidence import EvidenceItem, EvidenceRequest
from models.machine import AGENT_ACTIONS, SUPERVISOR_ACTIONS
from models.states import STATES, State
from models.ticket import LinkedComplaint, Ticket
from models.prepared import Prepared, Slots
from models.timer import PENDING, Timer
from models.workflow import is_allowed

if TYPE_CHECKING:
    from policy import Policy

#: The order parties are named in when several owe evidence (the buyer first).
PARTY_ORDER = ("user", "merchant")


def ticket_summary(ticket: Ticket) -> dict[str, object]:
    """The short form used by lookups and work lists."""
    return {"id": ticket.id, "source": ticket.source, "external_ref": ticket.external_ref, "state": ticket.state,
            "version": ticket.version, "assignee": ticket.assignee, "dispute_type": ticket.dispute_type,
            "category": ticket.category, "state_entered_at": iso(ticket.state_entered_at),
            "floor_at": iso(ticket.floor_at)}


def ticket_json(ticket: Ticket, agent: Agent | None, policy: "Policy", now: datetime) -> dict[str, object]:
    """The full ticket of SPEC §6 ``GET /tickets/{id}``; `agent` decides ``allowed_actions``
    (None, e.g. from the CLI: no actions). Everything beside the ticket row is one query (`related_of`)."""
    related = related_of(ticket)
    sla = ticket_sla(ticket, policy, now, marks=related.marks)
    owing = waiting_on(ticket, related)
    return {
        **ticket_summary(ticket),
        "channel": ticket.channel, "user_id": ticket.user_id, "merchant_id": ticket.merchant_id,
        "order_id": ticket.order_id, "order_status": ticket.order_status, "delivery": ticket.delivery,
        "description": ticket.description, "complexity": ticket.complexity,
        "dispute_status": ticket.dispute_status, "negotiation_option": ticket.negotiation_option,
        "evidence_rounds": ticket.evidence_rounds, "liability": ticket.liability, "remedy": ticket.remedy,
        "judged_by": ticket.judged_by,
        "amounts": {"currency": ticket.currency, "order": ticket.order_amount, "claimed": ticket.claimed_amount,
                    "refund": ticket.refund_amount, "refunded": ticket.refunded_amount or 0,
                    "complaint_fee": ticket.complaint_fee},
        "payment": payment_json(ticket, related),
        "sla": sla.as_json(),
        "evidence": related.evidence,
        "evidence_requests": [{k: v for k, v in r.items() if k != "id"} for r in related.requests],
        "waiting_on": owing[0], "waiting_on_all": owing,
        "due_at": iso(due_at(ticket, sla.accept_due, sla.resolve_due, related)),
        "allowed_actions": allowed_actions(ticket, agent, policy, related),
        "linked_complaints": related.linked,
        "assigned_at": iso(ticket.assigned_at), "created_at": iso(ticket.created_at),
        "closed_at": iso(ticket.closed_at),
    }


def payment_json(ticket: Ticket, related: "Related | None" = None) -> dict[str, object]:
    """Where the money stands: what stage 4 and a supervisor need to see before acting."""
    return {"waiting_for": ticket.payment_wait, "voucher": ticket.voucher_status, "issue": ticket.payment_issue,
            "pending_approval": (related or related_of(ticket)).approval}


@dataclass
class Related:
    """What the ticket view shows beside the ticket row, read by one statement (`related_of`)."""

    evidence: list[dict[str, object]] = field(default_factory=list)
    #: Oldest round first; each with its ``id`` (dropped from the JSON) and datetimes as ISO text.
    requests: list[dict[str, object]] = field(default_factory=list)
    linked: list[dict[str, object]] = field(default_factory=list)
    #: The pending approval of the ticket's money (the newest if several), JSON-ready, or None.
    approval: dict[str, object] | None = None
    #: The earliest pending timer of the ticket's current state (its ``state_version``).
    timer_due: datetime | None = None
    #: (first takeover, first stage-1 decision) by an agent: `models.views.sla.milestones`.
    marks: tuple[datetime | None, datetime | None] = (None, None)
    goods_returned: bool = False


# One row shape for every table read: (tag, n, i1, i2, s1, s2, s3, s4, s5, d1, d2), so the reads of a
# ticket view are one UNION ALL. n orders rows of a kind (id, or the event's version).
_SLOTS = ("n", "i1", "i2", "s1", "s2", "s3", "s4", "s5", "d1", "d2")
#: The audit actions the view needs: the SLA milestones and the buyer's returned goods.
_VIEW_ACTIONS = ("take_over",) + FEEDBACK_ACTIONS + ("return_goods",)
#: A slot a table leaves empty is a typed NULL: PostgreSQL types a UNION column by its first branches.
_NULLS = {"n": "BIGINT", "i": "BIGINT", "s": "TEXT", "d": "TIMESTAMP"}


def _row(tag: str, **slots: peewee.Node) -> list[peewee.Node]:
    return [peewee.Value(tag).alias("tag")] + [
        slots.get(name, peewee.SQL(f"CAST(NULL AS {_NULLS[name[0]]})")).alias(name) for name in _SLOTS]


def _related(s: Slots) -> peewee.Query:
    parts = [
        Approval.select(*_row("a", n=Approval.id, i1=Approval.amount, i2=Approval.requested_by,
                                s1=Approval.kind, s2=Approval.currency, d1=Approval.requested_at))
        .where((Approval.ticket_id == s.ticket) & Approval.decision.is_null()),
        EvidenceItem.select(*_row("e", n=EvidenceItem.id, i1=EvidenceItem.round,
                                  s1=EvidenceItem.party, s2=EvidenceItem.kind, s3=EvidenceItem.uri,
                                  s4=EvidenceItem.sha256, s5=EvidenceItem.note, d1=EvidenceItem.submitted_at))
        .where(EvidenceItem.ticket == s.ticket),
        EvidenceRequest.select(*_row("r", n=EvidenceRequest.id, i1=EvidenceRequest.round,
                                     s1=EvidenceRequest.party, s2=EvidenceRequest.kinds,
                                     d1=EvidenceRequest.due_at, d2=EvidenceRequest.fulfilled_at))
        .where(EvidenceRequest.ticket == s.ticket),
        LinkedComplaint.select(*_row("l", n=LinkedComplaint.id, i1=LinkedComplaint.claimed_amount,
                                     s1=LinkedComplaint.source, s2=LinkedComplaint.external_ref,
                                     s3=LinkedComplaint.dispute_type, d1=LinkedComplaint.linked_at))
        .where(LinkedComplaint.ticket == s.ticket),
        TicketEvent.select(*_row("v", n=TicketEvent.version, s1=TicketEvent.action,
                                 s2=TicketEvent.actor, d1=TicketEvent.at))
        .where((TicketEvent.ticket == s.ticket) & TicketEvent.action.in_(_VIEW_ACTIONS)),
        Timer.select(*_row("t", n=Timer.id, d1=Timer.due_at))
        .where((Timer.ticket_id == s.ticket) & (Timer.status == PENDING) & (Timer.state == s.state)
               & (Timer.state_version == s.state_version)),
    ]
    return functools.reduce(lambda a, b: a.union_all(b), parts)


#: Read for every ticket an agent opens or claims: compiled once (models.prepared).
_RELATED = Prepared(_related)

_TIME = UtcDateTimeField()
_KINDS = EvidenceRequest.kinds


def _time(raw: object) -> datetime | None:
    return _TIME.python_value(raw)  # type: ignore[no-any-return]


def related_of(ticket: Ticket) -> Related:
    """Everything `ticket_json` shows beside the ticket row: its evidence, the evidence requests, the
    linked complaints, the pending approval, the state's timer and the audit milestones — one query."""
    related = Related()
    rows = sorted(_RELATED.execute(ticket=ticket.id, state=ticket.state, state_version=ticket.state_version)
                  .fetchall(), key=lambda r: (r[0], r[1]))
    accepted = fed_back = None
    for tag, n, i1, i2, s1, s2, s3, s4, s5, d1, d2 in rows:
        if tag == "e":
            related.evidence.append({"party": s1, "round": i1, "kind": s2, "uri": s3, "sha256": s4, "note": s5,
                                     "submitted_at": iso(_time(d1))})
        elif tag == "r":
            related.requests.append({"id": n, "round": i1, "party": s1, "kinds": list(_KINDS.python_value(s2) or []),
                                     "due_at": iso(_time(d1)), "fulfilled_at": iso(_time(d2))})
        elif tag == "l":
            related.linked.append({"source": s1, "external_ref": s2, "dispute_type": s3, "claimed_amount": i1,
                                   "linked_at": iso(_time(d1))})
        elif tag == "a":  # ordered by id: the last one read is the newest
            related.approval = {"kind": s1, "amount": i1, "currency": s2, "requested_by": i2,
                                "requested_at": iso(_time(d1))}
        elif tag == "t":
            due = _time(d1)
            if due is not None and (related.timer_due is None or due < related.timer_due):
                related.timer_due = due
        elif tag == "v":
            if s1 == "return_goods":
                related.goods_returned = True
            elif str(s2).lower().startswith("agent:"):  # as `models.views.sla.milestones` reads them
                if s1 == "take_over":
                    accepted = accepted or _time(d1)
                elif fed_back is None:
                    fed_back = _time(d1)
    related.requests.sort(key=lambda r: (r["round"], r["id"]))
    related.marks = (accepted, fed_back)
    return related


def waiting_on(ticket: Ticket, related: Related | None = None) -> list[str]:
    """Whose move it is, most pressing first. The state says it, except where the ticket's own
    records do: the parties still owing evidence this round, and a buyer owing returned goods."""
    state = State(ticket.state)
    if state == State.AWAITING_EVIDENCE:
        requests = (related or related_of(ticket)).requests
        owing = {r["party"] for r in requests if r["round"] == ticket.evidence_rounds and r["fulfilled_at"] is None}
        parties = [p for p in PARTY_ORDER if p in owing]
        return parties or ["stage2"]  # everyone answered: the wake-up into stage 2 is on its way
    if state == State.AWAITING_PAYMENT and ticket.remedy == "return_and_refund" \
            and not (related or related_of(ticket)).goods_returned:
        return ["user"]
    return [STATES[state].waiting_on]


def due_at(ticket: Ticket, accept_due: datetime | None, resolve_due: datetime | None,
           related: Related | None = None) -> datetime | None:
    """The next deadline: the state's pending timer, else the SLA promise of a visible state."""
    timer_due = (related or related_of(ticket)).timer_due
    if timer_due is not None:
        return timer_due
    info = STATES[State(ticket.state)]
    if not info.visible:
        return None
    return accept_due if ticket.state == State.AWAITING_TAKEOVER else resolve_due


def allowed_actions(ticket: Ticket, agent: Agent | None, policy: "Policy",
                    related: Related | None = None) -> list[str]:
    """What `agent` may do now: its stage's configured actions whose table row allows them when the
    ticket is the agent's; ``claim`` when it waits unassigned in the agent's stage; else nothing."""
    if agent is None:
        return []
    pending = (related.approval if related is not None else pending_approval(ticket.id)) if agent.supervisor else None
    if pending is not None:
        supervisor = Actor(Role.SUPERVISOR, agent.id)
        return [a for a in SUPERVISOR_ACTIONS if is_allowed(ticket, a, supervisor, policy)]
    stage = STATES[State(ticket.state)].stage
    if stage is None or stage != agent.stage_name:
        return []
    if ticket.assignee is None:
        return ["claim"] if claimable_by(ticket, agent) else []
    if ticket.assignee != agent.id:
        return []
    configured = policy.options_for(stage).actions
    actor = Actor.agent(agent.stage, agent.id)
    return [a for a in AGENT_ACTIONS[stage] if a in configured and is_allowed(ticket, a, actor, policy)]


def claimable_by(ticket: Ticket, agent: Agent) -> bool:
    """An unassigned ticket the agent's ``POST /me/claim`` could take: stage 1 takes over from
    ``awaiting_takeover``; later stages claim their own state; an appeal skips its first judge."""
    if ticket.assignee is not None:
        return False
    if agent.stage == 1:
        return ticket.state in (State.AWAITING_TAKEOVER, State.STAGE1)
    if ticket.state != agent.stage_name:
        return False
    return not (agent.stage == 3 and ticket.judged_by == agent.id)


def event_json(event: TicketEvent) -> dict[str, object]:
    """One audit row as ``GET /tickets/{id}/events`` lists it."""
    params, data = event.params or {}, event.data or {}
    option = params.get("option") or data.get("option")
    qc = None if event.qc_verdict is None else {
        "verdict": event.qc_verdict, "reason_code": event.qc_reason, "about": event.qc_about}
    return {"version": event.version, "at": iso(event.at), "actor": event.actor, "action": event.action,
            "option": option if isinstance(option, str) else None, "from_state": event.from_state,
            "to_state": event.to_state, "params": event.params, "qc": qc, "data": event.data}


def ticket_events(ticket_id: int) -> list[dict[str, object]]:
    """The audit trail, oldest first."""
    query = TicketEvent.select().where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.version)
    return [event_json(e) for e in query]
