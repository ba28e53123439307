"""The ticket as agents and tools see it: one JSON-ready dict, shared by the API and the CLI.

``GET /tickets/{id}``, ``POST /me/claim`` and ``disputes ticket show --json``
must agree to the key, so the shape is built here, without Flask, from the
models and the policy. Derived facts — whose move it is, the next deadline,
the SLA, what the caller may click — are computed on read from the tables
that own them (evidence requests, timers, the audit trail, the transition
table), never stored twice.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from models.views.sla import iso, ticket_sla
from models.agent import Agent
from models.audit import TicketEvent
from models.approval import pending_approval
from models.change import Actor, Role
from models.evidence import EvidenceItem, EvidenceRequest
from models.machine import AGENT_ACTIONS, SUPERVISOR_ACTIONS
from models.states import STATES, State
from models.ticket import LinkedComplaint, Ticket
from models.prepared import Prepared
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
    (None, e.g. from the CLI: no actions)."""
    sla = ticket_sla(ticket, policy, now)
    owing = waiting_on(ticket)
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
        "payment": payment_json(ticket),
        "sla": sla.as_json(),
        "evidence": evidence_items(ticket.id),
        "evidence_requests": evidence_requests(ticket.id),
        "waiting_on": owing[0], "waiting_on_all": owing,
        "due_at": iso(due_at(ticket, sla.accept_due, sla.resolve_due)),
        "allowed_actions": allowed_actions(ticket, agent, policy),
        "linked_complaints": linked_complaints(ticket.id),
        "assigned_at": iso(ticket.assigned_at), "created_at": iso(ticket.created_at),
        "closed_at": iso(ticket.closed_at),
    }


def payment_json(ticket: Ticket) -> dict[str, object]:
    """Where the money stands: what stage 4 and a supervisor need to see before acting."""
    pending = pending_approval(ticket.id)
    return {"waiting_for": ticket.payment_wait, "voucher": ticket.voucher_status, "issue": ticket.payment_issue,
            "pending_approval": None if pending is None else {
                "kind": pending.kind, "amount": pending.amount, "currency": pending.currency,
                "requested_by": pending.requested_by, "requested_at": iso(pending.requested_at)}}


# Read for every ticket an agent opens or claims: compiled once (models.prepared).
_EVIDENCE = Prepared(lambda s: EvidenceItem.select().where(EvidenceItem.ticket == s.ticket).order_by(EvidenceItem.id))
_REQUESTS = Prepared(lambda s: EvidenceRequest.select().where(EvidenceRequest.ticket == s.ticket)
                     .order_by(EvidenceRequest.round, EvidenceRequest.id))
_LINKED = Prepared(lambda s: LinkedComplaint.select().where(LinkedComplaint.ticket == s.ticket)
                   .order_by(LinkedComplaint.id))
_STATE_TIMER = Prepared(lambda s: Timer.select(Timer.due_at).where(
    (Timer.ticket_id == s.ticket) & (Timer.status == PENDING) & (Timer.state == s.state)
    & (Timer.state_version == s.state_version)).order_by(Timer.due_at).limit(1))


def evidence_items(ticket_id: int) -> list[dict[str, object]]:
    return [{"party": e.party, "round": e.round, "kind": e.kind, "uri": e.uri, "sha256": e.sha256,
             "note": e.note, "submitted_at": iso(e.submitted_at)}
            for e in _EVIDENCE.rows(EvidenceItem, ticket=ticket_id)]


def evidence_requests(ticket_id: int) -> list[dict[str, object]]:
    return [{"round": r.round, "party": r.party, "kinds": list(r.kinds or []), "due_at": iso(r.due_at),
             "fulfilled_at": iso(r.fulfilled_at)} for r in _REQUESTS.rows(EvidenceRequest, ticket=ticket_id)]


def linked_complaints(ticket_id: int) -> list[dict[str, object]]:
    return [{"source": c.source, "external_ref": c.external_ref, "dispute_type": c.dispute_type,
             "claimed_amount": c.claimed_amount, "linked_at": iso(c.linked_at)}
            for c in _LINKED.rows(LinkedComplaint, ticket=ticket_id)]


def waiting_on(ticket: Ticket) -> list[str]:
    """Whose move it is, most pressing first. The state says it, except where the ticket's own
    records do: the parties still owing evidence this round, and a buyer owing returned goods."""
    state = State(ticket.state)
    if state == State.AWAITING_EVIDENCE:
        owing = {r.party for r in EvidenceRequest.select(EvidenceRequest.party).where(
            (EvidenceRequest.ticket == ticket.id) & (EvidenceRequest.round == ticket.evidence_rounds)
            & EvidenceRequest.fulfilled_at.is_null())}
        parties = [p for p in PARTY_ORDER if p in owing]
        return parties or ["stage2"]  # everyone answered: the wake-up into stage 2 is on its way
    if state == State.AWAITING_PAYMENT and ticket.remedy == "return_and_refund" and not _goods_returned(ticket):
        return ["user"]
    return [STATES[state].waiting_on]


def _goods_returned(ticket: Ticket) -> bool:
    return (TicketEvent.select().where((TicketEvent.ticket == ticket.id) & (TicketEvent.action == "return_goods"))
            .exists())


def due_at(ticket: Ticket, accept_due: datetime | None, resolve_due: datetime | None) -> datetime | None:
    """The next deadline: the state's pending timer, else the SLA promise of a visible state."""
    timer = _STATE_TIMER.first(Timer, ticket=ticket.id, state=ticket.state, state_version=ticket.state_version)
    if timer is not None:
        return timer.due_at  # type: ignore[no-any-return]
    info = STATES[State(ticket.state)]
    if not info.visible:
        return None
    return accept_due if ticket.state == State.AWAITING_TAKEOVER else resolve_due


def allowed_actions(ticket: Ticket, agent: Agent | None, policy: "Policy") -> list[str]:
    """What `agent` may do now: its stage's configured actions whose table row allows them when the
    ticket is the agent's; ``claim`` when it waits unassigned in the agent's stage; else nothing."""
    if agent is None:
        return []
    if agent.supervisor and pending_approval(ticket.id) is not None:
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
