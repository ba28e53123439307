"""The transition table: every (state, action, role) is either allowed by a row or refused.

The expected allow-set is built here from `TABLE`'s rows; each combination is
then tried with `models.workflow.apply` on a real ticket forced into the state,
inside a transaction the test rolls back, so one ticket serves a whole state.
"""
from __future__ import annotations

import re
from typing import Iterator

import pytest

from policy import default_policy_dict, policy_from_dict
from disputes.wiring import App
from models.audit import TicketEvent
from models.base import database, utcnow
from models.change import Actor, Role
from models.machine import (
    TABLE, NotAllowed, T, actions_in, check_table, render_markdown, rows_for,
)
from models.outbox import OutboxEvent
from models.states import OPEN_STATES, STATES, TERMINAL_STATES, State
from models.ticket import Ticket
from models.workflow import apply, is_allowed, open_ticket

ALL_STATES = [s.value for s in State]
ALL_ACTIONS = sorted({t.action for t in TABLE})
ALL_ROLES = list(Role)

#: (state, action, role) triples some row of the table lists (the creation rows aside).
ALLOWED: frozenset[tuple[str, str, Role]] = frozenset(
    (str(state), t.action, role) for t in TABLE for state in t.states if state is not None for role in t.actors)


def actor_for(role: Role) -> Actor:
    return Actor(role, 7) if role.value.startswith("stage") or role is Role.SUPERVISOR else Actor(role)


def params_for(action: str, role: Role) -> dict:
    """Well-formed params for `action`, as the intake or the desk would pass them."""
    party = "merchant" if role is Role.MERCHANT else "user"
    return {
        "request_evidence": {"dispute_status": "not_reconciled", "category": "apparel", "from": "both",
                             "items": ["photo"]},
        "to_judgment": {"dispute_status": "not_reconciled", "category": "apparel"},
        "submit_evidence": {"party": party, "items": [{"kind": "photo", "uri": "https://files.example/1.jpg"}]},
        "judge": {"liability": "merchant", "remedy": "full_refund"},
        "cannot_judge": {"reason_code": "insufficient_evidence"},
        "reject_voucher": {"reason_code": "illegible"},
        "complaint_fee": {"amount": 500},
        "upload_voucher": {"merchant_id": "m1", "voucher": {"uri": "https://files.example/v.pdf", "sha256": "a" * 64,
                                                            "amount": 5000, "currency": "CNY"}},
        "appeal": {"party": party, "reason_code": "disagree_liability"},
        "link_complaint": {"linked_source": "shop", "linked_external_ref": "LINKED"},
        "direct_refund": {"merchant_id": "m1", "option": "direct_refund"},
        "negotiated_reject": {"merchant_id": "m1", "option": "negotiated_reject"},
        "intercept_48h": {"merchant_id": "m1", "option": "intercept_48h"},
        "platform_judgment": {"merchant_id": "m1", "option": "platform_judgment"},
    }.get(action, {})


def ticket_fields(ref: str) -> dict:
    return dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                order_amount=10000, currency="CNY", category="apparel", delivery="platform",
                order_status="delivered", dispute_type="quality", claimed_amount=5000,
                occurred_at=utcnow())


@pytest.fixture(scope="module")
def table_app(app_factory, tmp_path_factory) -> Iterator[tuple[App, dict[str, int]]]:
    """One ticket per state, forced into it with judged, closed-just-now facts so guards can pass.
    (The default policy's deadlines here: the appeal window must stay open for the whole module.)"""
    app = app_factory(tmp_path_factory.mktemp("table") / "t.db", policy_from_dict(default_policy_dict()))
    ids: dict[str, int] = {}
    for state in ALL_STATES:
        outcome = open_ticket(ticket_fields(f"T-{state}"), {"negotiation": "failed"}, app.policy)
        Ticket.update(state=state, liability="merchant", remedy="full_refund", refund_amount=5000,
                      closed_at=utcnow() if state == "closed" else None).where(
            Ticket.id == outcome.ticket.id).execute()
        ids[state] = outcome.ticket.id
    try:
        yield app, ids
    finally:
        app.db.close()


def snapshot(ticket_id: int) -> tuple:
    t = Ticket.get_by_id(ticket_id)
    return (t.state, t.version, TicketEvent.select().where(TicketEvent.ticket == ticket_id).count(),
            OutboxEvent.select().where(OutboxEvent.ticket_id == ticket_id).count())


def test_the_table_passes_its_own_load_time_check() -> None:
    assert check_table() == []


def test_the_check_finds_an_exit_from_a_final_state_and_an_unreachable_state() -> None:
    # Given a table with an exit from 'resolved' and without the only way into 'withdrawn'
    broken = tuple(t for t in TABLE if t.action != "withdraw") + (
        T(State.RESOLVED, "reopen", Role.USER, State.STAGE1),)
    # When it is checked / Then both problems are named
    problems = check_table(broken)
    assert "final state 'resolved' has an exit: reopen" in problems
    assert "state 'withdrawn' is unreachable" in problems


def test_every_state_of_the_contract_has_its_row_in_states() -> None:
    assert set(STATES) == set(State)
    assert {str(s) for s in TERMINAL_STATES} == {"resolved", "closed", "withdrawn"}


def test_the_rendered_table_names_every_state_and_every_action() -> None:
    # Given the table rendered for the README
    md = render_markdown()
    # When its state columns are read back ("any open state" standing for all of them)
    named: set[str] = set()
    for line in md.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        froms = [str(s) for s in OPEN_STATES] if cells[0] == "any open state" else cells[0].split(", ")
        named.update(froms + [cells[3]])
    # Then every contract state appears, and every action
    assert set(ALL_STATES) <= named
    assert {a for a in re.findall(r"`(\w+)`", md)} == set(ALL_ACTIONS)


@pytest.mark.parametrize("negotiation,first_state", [
    ("pending", "negotiating"), ("failed", "awaiting_takeover"), ("timed_out", "awaiting_takeover")])
def test_a_complaint_opens_a_ticket_in_the_state_its_negotiation_calls_for(
        table_app, negotiation: str, first_state: str) -> None:
    app, _ = table_app
    with database.atomic() as txn:
        outcome = open_ticket(ticket_fields(f"N-{negotiation}"), {"negotiation": negotiation}, app.policy)
        assert (outcome.ticket.state, outcome.ticket.version) == (first_state, 1)
        event = TicketEvent.get(TicketEvent.ticket == outcome.ticket.id)
        assert (event.from_state, event.to_state, event.actor, event.action) == (None, first_state, "system", "submit")
        txn.rollback()


@pytest.mark.parametrize("action", ALL_ACTIONS)
@pytest.mark.parametrize("state", ALL_STATES)
def test_each_action_in_each_state_is_allowed_for_exactly_the_roles_the_table_lists(
        table_app, state: str, action: str) -> None:
    app, ids = table_app
    ticket_id = ids[state]
    before = snapshot(ticket_id)
    wrong: list[str] = []
    for role in ALL_ROLES:
        listed = (state, action, role) in ALLOWED
        rows = rows_for(state, action, role)
        if bool(rows) != listed:
            wrong.append(f"{role}: rows_for says {bool(rows)}, table lists {listed}")
        if listed != (action in actions_in(state, role)):
            wrong.append(f"{role}: actions_in disagrees with the table")
        # Given the ticket in `state` / When `role` takes `action`
        with database.atomic() as txn:
            ticket = Ticket.get_by_id(ticket_id)
            allowed_now = is_allowed(ticket, action, actor_for(role), app.policy, params_for(action, role))
            try:
                outcome = apply(ticket_id, action, actor_for(role), params_for(action, role), app.policy)
                refusal = None
            except NotAllowed as exc:
                outcome, refusal = None, exc
            txn.rollback()
        # Then an unlisted combination is refused as "not an action of this state for this actor",
        # and a listed one applies (moving to one of its rows' targets) or is refused by a guard
        if not listed:
            if refusal is None or refusal.guarded:
                wrong.append(f"{role}: not listed, but {'applied' if refusal is None else 'refused by a guard'}")
        elif refusal is not None and not refusal.guarded:
            wrong.append(f"{role}: listed, but refused as not an action of the state")
        elif refusal is not None and not refusal.refusals:
            wrong.append(f"{role}: refused by its guards {refusal.failed}, none of which says why")
        elif outcome is not None and outcome.ticket.state not in {row.target(state) for row in rows}:
            wrong.append(f"{role}: moved to {outcome.ticket.state}, not a target of its rows")
        if allowed_now != (outcome is not None):
            wrong.append(f"{role}: is_allowed says {allowed_now}, apply {'applied' if outcome else 'refused'}")
        if listed and not any(row.guard for row in rows) and outcome is None:
            wrong.append(f"{role}: a row without a guard lists it, yet it was refused")
    assert wrong == []
    # And nothing of any attempt stayed behind
    assert snapshot(ticket_id) == before


def test_the_last_guarded_row_of_every_action_says_why_it_refuses() -> None:
    # Given the rows of each (state, action, role), in the order `match` tries them
    silent = []
    for state in [*State, None]:
        for action in ALL_ACTIONS:
            for role in ALL_ROLES:
                rows = rows_for(state, action, role)
                # Then when every row says no, the last one (the most general) has the words for it
                if rows and rows[-1].guard is not None and getattr(rows[-1].guard, "refusal", None) is None:
                    silent.append(f"{state} {action} {role}: {rows[-1].guard.__name__}")
    assert silent == []


def test_an_action_no_row_names_is_refused_in_every_state(table_app) -> None:
    app, ids = table_app
    for state, ticket_id in ids.items():
        with pytest.raises(NotAllowed) as refusal:
            apply(ticket_id, "teleport", Actor(Role.SUPERVISOR, 1), {}, app.policy)
        assert not refusal.value.guarded and refusal.value.state == state


@pytest.mark.parametrize("state", ["resolved", "withdrawn"])
def test_a_settled_or_withdrawn_ticket_accepts_nothing_from_anyone(table_app, state: str) -> None:
    assert all(not actions_in(state, role) for role in ALL_ROLES)


def test_a_closed_ticket_accepts_only_an_appeal_from_a_party(table_app) -> None:
    assert {role: actions_in("closed", role) for role in ALL_ROLES if actions_in("closed", role)} == {
        Role.USER: ["appeal"], Role.MERCHANT: ["appeal"]}
