"""``POST /tickets/{id}/actions``: check an agent's decision, then hand it to the stage's queue.

The API answers fast and the stage worker applies: everything the desk can
know up front is checked here, in the order a client can act on — the ticket
exists (404), the caller's view is current (409 ``version_conflict``), the
ticket is the caller's (403), the decision is a configured option with a
valid QC verdict (422), and the transition table allows it now (409
``state_conflict``, in the words of the guards that said no: `models.rules.refuses`).
An accepted decision becomes an `AgentDecision` dispatch committed before it
is sent, so a crash after the 202 loses nothing; the worker applies it with
the same expected version, so a decision raced by another change is refused
there and ``GET /dispatches/{id}`` says so.

A decision is one transaction that reads the whole ticket row with its lock
first (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the transaction is
``BEGIN IMMEDIATE`` and holds the one write lock already), runs every check
on that row, looks once for a decision already accepted on its version, and
writes the dispatch: three statements besides the guards' own reads (the
complaint-fee budget). Checking under the lock is what makes two decisions
on one version at the same instant end in one 202 and one 409: the second
waits for the first's commit, then finds its dispatch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import peewee

from desk.errors import ApiError, forbidden, not_found, unprocessable
from desk.schemas import MAX_ID
from models.agent import Agent
from models.base import database
from models.change import Actor
from models.approval import pending_approval
from models.change import Role
from models.compensation import budget_left
from models.dispatches import AgentDecision
from models.errors import BadPayload, NotAllowed
from models.machine import AGENT_ACTIONS, SUPERVISOR_ACTIONS
from models.outbox import Dispatch, DispatchRef, decision_in_flight, new_dispatch
from models.prepared import Prepared, Slots, get_by_id
from models.states import STATES, State
from models.ticket import Ticket
from models.workflow import check_allowed
from models.sending import send_dispatches
from policy.options import money_text

if TYPE_CHECKING:
    from policy import Policy
    from disputes.wiring import App


def load_ticket(ticket_id: int) -> Ticket:
    """The ticket, or a 404 (ids outside the column's range are simply unknown)."""
    ticket = get_by_id(Ticket, ticket_id) if 0 < ticket_id <= MAX_ID else None
    if ticket is None:
        raise not_found(f"no ticket {ticket_id}")
    return ticket


def submit_action(ticket_id: int, agent: Agent, body: dict, app: "App") -> DispatchRef:
    """Check the decision in `body` (``action``, ``expected_version``, ``params``, ``qc``), write its
    dispatch and send it; raises `ApiError` with the status SPEC §6 gives each refusal."""
    with database.atomic():
        ticket = lock_for_decision(ticket_id)
        dispatch = _accept(ticket, agent, body, app)
    send_dispatches(app.broker, [dispatch])  # after commit: the worker must find the row
    return dispatch


def lock_for_decision(ticket_id: int) -> Ticket:
    """The whole ticket, locked until the caller's transaction ends (`models.ticket.lock_ticket`,
    compiled once), or a 404: every check of a decision reads this row, so none can pass on a
    version another decision is being accepted on at the same instant."""
    ticket = _LOCKED.first(Ticket, id=ticket_id) if 0 < ticket_id <= MAX_ID else None
    if ticket is None:
        raise not_found(f"no ticket {ticket_id}")
    return ticket


def _locked(s: Slots) -> peewee.Query:
    query = Ticket.select().where(Ticket.id == s.id)
    # Compiled once per kind of database: FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already
    # holds the one write lock.
    return query.for_update() if isinstance(database.obj, peewee.PostgresqlDatabase) else query


_LOCKED = Prepared(_locked)


def _accept(ticket: Ticket, agent: Agent, body: dict, app: "App") -> DispatchRef:
    """The decision's dispatch once it passed every check on the locked `ticket`, in SPEC's order:
    409 version (or a decision on it already accepted), 403, 422, 409 state."""
    action, expected = body["action"], body["expected_version"]
    params, qc = body.get("params") or {}, body.get("qc")
    check_version(ticket, expected)
    if action in SUPERVISOR_ACTIONS:
        return _accept_approval(ticket, agent, action, expected, app)
    check_owner(ticket, agent)
    check_option(ticket, agent.stage_name, action, params, qc, app.policy)
    check_budget(ticket, action, params, app)
    check_state(ticket, Actor.agent(agent.stage, agent.id), action, params, app.policy)
    return new_dispatch(agent.stage_name, AgentDecision(ticket.id, agent.id, action, expected, params, qc))


def _accept_approval(ticket: Ticket, agent: Agent, action: str, expected: int, app: "App") -> DispatchRef:
    """A supervisor approves or declines money the platform pays (four eyes): never their own request."""
    if not agent.supervisor:
        raise forbidden(f"'{action}' is a supervisor's action")
    if STATES[State(ticket.state)].stage != "stage4":
        raise forbidden(f"ticket {ticket.id} is in '{ticket.state}': approvals are given in stage4")
    pending = pending_approval(ticket.id)
    if pending is None:
        raise ApiError(409, "state_conflict", f"ticket {ticket.id} has no payment awaiting approval",
                       {"action": ["nothing awaits approval"]}, current_version=ticket.version, state=ticket.state)
    if pending.requested_by == agent.id:
        raise forbidden("four eyes: you asked for this payment, so another supervisor must decide it")
    check_state(ticket, Actor(Role.SUPERVISOR, agent.id), action, {}, app.policy)
    return new_dispatch("stage4", AgentDecision(ticket.id, agent.id, action, expected, role=Role.SUPERVISOR.value))


def check_budget(ticket: Ticket, action: str, params: dict, app: "App") -> None:
    """422 naming what is left when a complaint fee would pass this month's budget. A fee of nothing
    fits any budget (as the fee guards say, `models.compensation.fee_payable_now`): no read for it."""
    if action != "complaint_fee" or not isinstance(params.get("amount"), int) or params["amount"] == 0:
        return
    left = budget_left(app.policy, app.clock())
    if params["amount"] > left:
        currency = app.policy.complaint_fee.currency
        shown = money_text(left, currency)
        raise ApiError(422, "over_budget", f"the complaint fee would exceed this month's budget: {shown} left",
                       {"amount": [f"exceeds this month's complaint-fee budget: {shown} left"]},
                       budget_left_minor=left, currency=currency)


def check_version(ticket: Ticket, expected: int) -> None:
    """409 when the caller decided on an old version, or a decision on this version is already
    accepted and not yet applied (a double click: only one of the two could ever apply)."""
    if expected != ticket.version:
        raise ApiError(409, "version_conflict",
                       f"ticket {ticket.id} is at version {ticket.version}, not {expected}: reload it",
                       {"expected_version": [f"the ticket is at version {ticket.version}"]},
                       current_version=ticket.version, state=ticket.state)
    row = decision_in_flight(ticket.id, ticket.version)
    if row is not None:
        raise ApiError(409, "version_conflict",
                       f"a decision on version {ticket.version} of ticket {ticket.id} is already being "
                       f"applied (dispatch {row.id}); wait for it and reload",
                       {"expected_version": [f"dispatch {row.id} already acts on this version"]},
                       current_version=ticket.version, state=ticket.state, dispatch_id=row.id)


def check_owner(ticket: Ticket, agent: Agent) -> None:
    """403 unless the ticket is in the agent's stage and assigned to the agent."""
    stage = STATES[State(ticket.state)].stage
    if stage != agent.stage_name:
        where = f"in {stage}" if stage else f"in '{ticket.state}', which no stage works"
        raise forbidden(f"ticket {ticket.id} is {where}; you work {agent.stage_name}")
    if ticket.assignee != agent.id:
        who = "nobody: claim it first" if ticket.assignee is None else "another agent"
        raise forbidden(f"ticket {ticket.id} is not assigned to you (it is assigned to {who})")


def check_option(ticket: Ticket, stage: str, action: str, params: object, qc: object, policy: "Policy") -> None:
    """422 for anything not configured for the stage: the action, its params, the QC verdict;
    and for a partial refund above what the buyer claimed."""
    options = policy.options_for(stage)
    errors: dict[str, list[str]] = {}
    if action not in AGENT_ACTIONS[stage]:
        errors["action"] = [f"{action!r} is not an action of {stage} (it has {', '.join(AGENT_ACTIONS[stage])})"]
    else:
        errors.update(options.check(action, params))
    errors.update(options.check_qc(qc))
    if errors:
        raise unprocessable(f"not a configured option of {stage}: see fields", errors, code="not_configured")
    assert isinstance(params, dict)
    amount = params.get("amount")
    if action == "judge" and params.get("remedy") == "partial_refund" and isinstance(amount, int) \
            and amount > ticket.claimed_amount:
        claimed = money_text(ticket.claimed_amount, ticket.currency)
        raise unprocessable("the refund is above the claim", {
            "amount": [f"must not exceed the claimed amount ({claimed})"]})


def check_state(ticket: Ticket, actor: Actor, action: str, params: dict, policy: "Policy") -> None:
    """409 ``state_conflict`` when no row of the transition table lets the action apply now, with
    the words of the guards that said no (`NotAllowed.reason`)."""
    try:
        check_allowed(ticket, action, actor, policy, params)
    except NotAllowed as refusal:
        reason = refusal.reason
        raise ApiError(409, "state_conflict", f"'{action}' cannot be taken on ticket {ticket.id} now: {reason}",
                       {"action": [reason]}, current_version=ticket.version, state=ticket.state) from None


def dispatch_json(row: Dispatch) -> dict[str, object]:
    """What became of an accepted decision (``GET /dispatches/{id}``)."""
    try:
        action = row.payload_as(AgentDecision).action if row.kind == AgentDecision.kind else None
    except BadPayload:  # its worker refuses it; the outcome says why
        action = None
    return {"id": row.id, "ticket_id": row.ticket_id, "queue": row.queue, "kind": row.kind,
            "action": action, "done": row.done_at is not None, "outcome": row.outcome,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "done_at": row.done_at.isoformat() if row.done_at else None}
