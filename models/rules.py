"""The named guards and effects the transition table refers to.

A guard answers "may this row apply?" from the ticket, the params and the
policy, and changes nothing. An effect does what the row means — records a
judgment, opens an evidence round, sets a deadline — inside the transaction
of the change; the workflow then writes the ticket with one guarded UPDATE.

A guard whose "no" is a reason to give the agent or party who asked carries
its words (`refuses`); `models.machine.match` puts them on the `NotAllowed`
it raises, and the desk shows them as they are. A guard without words only
chooses between rows of one action: a later row of that action (whose guard
has words, or none at all) covers its "no" — a test of the table checks it.
"""
from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

from models import sla
from models.audit import TicketEvent
from models.change import Change
from models.evidence import EvidenceItem, EvidenceRequest
from models.prepared import Prepared
from models.write_behind import insert_later
from models.states import STATES, State
from models.timer import CANCELLED, PENDING, Timer

Guard = Callable[[Change], bool]
Effect = Callable[[Change], None]
G = TypeVar("G", bound=Guard)

MERCHANT_SIDE = ("merchant", "both")
CUSTOMER_SIDE = ("customer", "neither")


# ---- guards ---------------------------------------------------------------

def refuses(text: str) -> Callable[[G], G]:
    """Give a guard the words shown when it says no: a `str.format` template over the change as
    ``c`` (``{c.ticket.liability}``), formatted when the guard fails."""
    def attach(guard: G) -> G:
        guard.refusal = text  # type: ignore[attr-defined]
        return guard
    return attach


def refusal_of(guard: Guard, c: Change) -> str | None:
    """The words of a guard that said no to `c`; None for a guard that only chooses between rows."""
    text: str | None = getattr(guard, "refusal", None)
    return None if text is None else text.format(c=c)


def negotiation_pending(c: Change) -> bool:
    return c.params.get("negotiation", "pending") == "pending"


@refuses("the evidence rounds are used up ({c.ticket.evidence_rounds} of {c.policy.evidence.max_rounds}); "
         "send the ticket to judgment")
def below_evidence_cap(c: Change) -> bool:
    return c.ticket.evidence_rounds < c.policy.evidence.max_rounds


def completes_evidence(c: Change) -> bool:
    """This submission is the last one the current round is waiting for."""
    outstanding = {r.party for r in _open_requests(c)}
    return bool(outstanding) and outstanding <= {c.params.get("party")}


@refuses("you judged this ticket before its appeal: another stage-3 agent decides it now")
def not_the_appealed_judge(c: Change) -> bool:
    """After an appeal, the ticket goes to a stage-3 agent other than the one who judged it."""
    return c.ticket.judged_by is None or c.actor.agent_id != c.ticket.judged_by


def interception_already_requested(c: Change) -> bool:
    """The interception deadline passed once already (and logistics was asked): stop waiting."""
    return (TicketEvent.select().where((TicketEvent.ticket == c.ticket.id)
                                       & (TicketEvent.action == "interception_deadline")
                                       & (TicketEvent.version > c.ticket.state_version)).exists())


@refuses("the ticket is already assigned")
def unassigned(c: Change) -> bool:
    return c.ticket.assignee is None


@refuses("nobody holds the ticket")
def assigned(c: Change) -> bool:
    return c.ticket.assignee is not None


@refuses("the ticket is already assigned, or you judged it before its appeal")
def unassigned_and_not_the_appealed_judge(c: Change) -> bool:
    return unassigned(c) and not_the_appealed_judge(c)


@refuses("the appeal window has closed")
def within_appeal_window(c: Change) -> bool:
    closed = c.ticket.closed_at
    return closed is not None and c.now <= c.policy.deadlines.appeal.after(closed, c.policy.calendar)


@refuses("this flow is not enabled for the merchant yet")
def merchant_in_rollout(c: Change) -> bool:
    """The flow named by the action is enabled for this merchant (stable hash, so raising the
    percentage only ever adds merchants)."""
    percent = c.policy.rollout.get(c.action, 100)
    digest = hashlib.sha256(f"{c.action}:{c.ticket.merchant_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def order_completed(c: Change) -> bool:
    return c.ticket.order_status == "completed"


def merchant_delivers(c: Change) -> bool:
    return c.ticket.delivery == "merchant"


def _open_requests(c: Change) -> list[EvidenceRequest]:
    return list(EvidenceRequest.select().where(
        (EvidenceRequest.ticket == c.ticket.id) & (EvidenceRequest.round == c.ticket.evidence_rounds)
        & EvidenceRequest.fulfilled_at.is_null()))


# ---- effects --------------------------------------------------------------

def start_deadline(name: str) -> Effect:
    """A durable timer for ``deadlines.<name>``, owned by the state being entered."""
    def effect(c: Change) -> None:
        due = c.policy.deadline(name).after(c.now, c.policy.calendar)
        entered = c.next_version if c.to_state != c.from_state else c.ticket.state_version
        if c.ticket.version and c.to_state == c.from_state:
            # A deadline restarted in the state it runs in (goods, then a voucher) replaces the one
            # running. Entering a state needs no such care: the timers of every earlier visit died
            # when that visit ended (`models.workflow`), and a new ticket has none.
            _CANCEL_DEADLINE.execute(ticket_id=c.ticket.id, action=f"{name}_deadline")
        insert_later(Timer, ticket_id=c.ticket.id, action=f"{name}_deadline", state=c.to_state,
                   state_version=entered, queue=STATES[State(c.to_state)].wake_queue, due_at=due)
        c.data["due_at"] = due.isoformat()
    effect.__name__ = f"start_deadline_{name}"
    return effect


_CANCEL_DEADLINE = Prepared(lambda s: Timer.update(status=CANCELLED).where(
    (Timer.ticket_id == s.ticket_id) & (Timer.status == PENDING) & (Timer.action == s.action)))


def reach_floor(c: Change) -> None:
    """The ticket reaches the customer-service floor: its SLA promises start (once)."""
    if c.ticket.floor_at is None:
        c.ticket.floor_at = c.now
        sla.pin(c)


def assign_to_actor(c: Change) -> None:
    c.ticket.assignee = c.actor.agent_id
    c.ticket.assigned_at = c.now


def release_assignee(c: Change) -> None:
    """The lease ran out: the ticket goes back to its stage's queue."""
    c.data.update(released=c.ticket.assignee)
    c.ticket.assignee = c.ticket.assigned_at = None


def record_dispute_status(c: Change) -> None:
    c.ticket.dispute_status = c.params["dispute_status"]
    c.ticket.category = c.params["category"]
    c.data.update(dispute_status=c.ticket.dispute_status, category=c.ticket.category)


def request_evidence(c: Change) -> None:
    """Open the next evidence round: one request per party, one deadline for the round."""
    c.ticket.evidence_rounds += 1
    parties = ("user", "merchant") if c.params["from"] == "both" else (c.params["from"],)
    due = c.policy.deadlines.evidence.after(c.now, c.policy.calendar)
    for party in parties:
        EvidenceRequest.create(ticket=c.ticket.id, round=c.ticket.evidence_rounds, party=party,
                               kinds=list(c.params["items"]), requested_by=c.actor.agent_id,
                               requested_at=c.now, due_at=due)
    start_deadline("evidence")(c)
    c.data.update(round=c.ticket.evidence_rounds, parties=list(parties), items=list(c.params["items"]))


def record_evidence(c: Change) -> None:
    party = c.params["party"]
    for item in c.params.get("items") or []:
        EvidenceItem.create(ticket=c.ticket.id, round=c.ticket.evidence_rounds, party=party,
                            kind=item["kind"], uri=item["uri"], sha256=item.get("sha256"),
                            note=item.get("note"), submitted_at=c.now)
    (EvidenceRequest.update(fulfilled_at=c.now)
     .where((EvidenceRequest.ticket == c.ticket.id) & (EvidenceRequest.round == c.ticket.evidence_rounds)
            & (EvidenceRequest.party == party) & EvidenceRequest.fulfilled_at.is_null()).execute())
    c.data.update(party=party, items=len(c.params.get("items") or []), round=c.ticket.evidence_rounds)





def attach_party_evidence(c: Change) -> None:
    """Evidence that came with a merchant's answer (its no-fault proof) or with the complaint."""
    party = c.params.get("party") or ("merchant" if c.actor.role == "merchant" else "user")
    for item in c.params.get("evidence") or []:
        insert_later(EvidenceItem, ticket=c.ticket.id, round=0, party=party, kind=item["kind"], uri=item["uri"],
                     sha256=item.get("sha256"), note=item.get("note"), submitted_at=c.now)
    if c.params.get("option"):
        c.ticket.negotiation_option = c.params["option"]
        c.data["option"] = c.params["option"]




def request_interception(c: Change) -> None:
    """Platform-delivered orders: ask logistics to stop the parcel; its result moves the ticket."""
    c.data.update(interception_requested=True, order_id=c.ticket.order_id)





def close(c: Change) -> None:
    c.ticket.closed_at = c.now


def record_appeal(c: Change) -> None:
    c.ticket.closed_at = None
    c.data.update(party=c.params.get("party"), reason_code=c.params.get("reason_code"),
                  excluded_agent=c.ticket.judged_by)



