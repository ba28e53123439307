"""Properties of the state machine under random sequences of actions on one ticket.

Each example opens a ticket and applies a random sequence of (action, role,
params) — three steps in four drawn from what the table lists for the
ticket's current state (so tickets travel far: to judgment, closing, appeal),
the rest anything at all, and maybe the buyer's withdrawal at a random step.
Whatever happens, the invariants below must hold.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from policy import default_policy_dict, policy_from_dict
from disputes.wiring import App
from models.audit import TicketEvent
from models.base import utcnow
from models.change import Actor, Role
from models.machine import TABLE, NotAllowed
from models.outbox import OutboxEvent
from models.states import State
from models.ticket import Ticket
from models.workflow import apply, open_ticket

CONTRACT_STATES = frozenset(s.value for s in State)
ALL_ACTIONS = sorted({t.action for t in TABLE})
ALL_ROLES = list(Role)
#: Per state, every (action, role) some row lists, in a stable order for hypothesis; without
#: `withdraw`, which would end most sequences early (the unrestricted draws still pick it).
LISTED: dict[str, list[tuple[str, Role]]] = {
    str(state): sorted({(t.action, role) for t in TABLE if state in t.states for role in t.actors
                        if t.action != "withdraw"})
    for state in State
}
EVIDENCE_KINDS = ["photo", "video", "chat_log", "logistics_proof", "invoice", "voucher", "other"]
_refs = itertools.count(1)


@st.composite
def params_for(draw: st.DrawFn, action: str, role: Role) -> dict:
    """Well-formed params for `action` (random where the contract offers a choice)."""
    party = "merchant" if role is Role.MERCHANT else "user"
    if action == "request_evidence":
        return {"dispute_status": draw(st.sampled_from(["not_reconciled", "merchant_timed_out"])),
                "category": draw(st.sampled_from(["apparel", "food"])),
                "from": draw(st.sampled_from(["user", "merchant", "both"])),
                "items": draw(st.lists(st.sampled_from(EVIDENCE_KINDS), min_size=1, max_size=3, unique=True))}
    if action == "to_judgment":
        return {"dispute_status": "not_reconciled", "category": "apparel"}
    if action == "submit_evidence":
        return {"party": party, "items": [{"kind": draw(st.sampled_from(EVIDENCE_KINDS)),
                                           "uri": "https://files.example/e.jpg"}]}
    if action == "judge":
        return {"liability": draw(st.sampled_from(["merchant", "customer", "both", "neither"])),
                "remedy": draw(st.sampled_from(["full_refund", "partial_refund", "return_and_refund", "no_refund"])),
                "amount": draw(st.integers(0, 6000))}
    if action == "complaint_fee":
        return {"amount": draw(st.sampled_from([0, 500, 1000, 2000, 5000]))}
    if action == "upload_voucher":
        return {"merchant_id": "m1", "voucher": {"uri": "https://files.example/v.pdf", "sha256": "a" * 64,
                                                 "amount": 5000, "currency": "CNY"}}
    if action == "appeal":
        return {"party": party, "reason_code": "disagree_liability"}
    if action in ("direct_refund", "negotiated_reject", "intercept_48h", "platform_judgment"):
        return {"merchant_id": "m1", "option": action}
    return {}


@pytest.fixture(scope="module")
def machine_app(app_factory, tmp_path_factory) -> Iterator[App]:
    """One database for all examples (each opens its own ticket); the default deadlines, so the
    appeal window of a ticket closed a moment ago is still open."""
    app = app_factory(tmp_path_factory.mktemp("machine") / "t.db", policy_from_dict(default_policy_dict()))
    try:
        yield app
    finally:
        app.db.close()


def observe(ticket_id: int) -> tuple[str, int, int, int]:
    t = Ticket.get_by_id(ticket_id)
    return (t.state, t.version, TicketEvent.select().where(TicketEvent.ticket == ticket_id).count(),
            OutboxEvent.select().where(OutboxEvent.ticket_id == ticket_id).count())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), negotiation=st.sampled_from(["pending", "failed"]),
       delivery=st.sampled_from(["platform", "merchant"]),
       order_status=st.sampled_from(["delivered", "completed"]))
def test_random_action_sequences_keep_every_invariant_of_the_machine(
        machine_app: App, data: st.DataObject, negotiation: str, delivery: str, order_status: str) -> None:
    # Given a new ticket
    ref = f"P-{next(_refs)}"
    fields = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=10000, currency="CNY", category="apparel", delivery=delivery,
                  order_status=order_status, dispute_type="quality", claimed_amount=5000, occurred_at=utcnow())
    ticket_id = open_ticket(fields, {"negotiation": negotiation}, machine_app.policy).ticket.id
    # When random actions are applied one after another
    steps = data.draw(st.integers(1, 30), label="steps")
    withdraw_at = data.draw(st.none() | st.integers(0, 29), label="withdraw at")
    for step in range(steps):
        state, version, audits, events = before = observe(ticket_id)
        pick = data.draw(st.sampled_from(["listed", "listed", "listed", "any"]), label="pick")
        if step == withdraw_at:
            action, role = "withdraw", Role.USER
        elif pick == "listed" and LISTED[state]:
            action, role = data.draw(st.sampled_from(LISTED[state]), label="listed step")
        else:
            action = data.draw(st.sampled_from(ALL_ACTIONS), label="action")
            role = data.draw(st.sampled_from(ALL_ROLES), label="role")
        params = data.draw(params_for(action, role), label="params")
        # agents and supervisors are people with an agent id; the others are systems or parties
        is_agent = role.value.startswith("stage") or role == Role.SUPERVISOR
        actor = Actor(role, data.draw(st.integers(1, 3), label="agent")) if is_agent else Actor(role)
        try:
            apply(ticket_id, action, actor, params, machine_app.policy)
        except NotAllowed:
            # Then a refused action changes nothing: state, version, audit trail, outbox
            assert observe(ticket_id) == before
            continue
        # Then an applied one raises the version by exactly one and writes exactly one audit row
        new_state, new_version, new_audits, _ = observe(ticket_id)
        event(f"reached {new_state}")
        assert new_state in CONTRACT_STATES
        assert (new_version, new_audits) == (version + 1, audits + 1)
        last = TicketEvent.get((TicketEvent.ticket == ticket_id) & (TicketEvent.version == new_version))
        assert (last.from_state, last.to_state, last.action, last.actor) == (state, new_state, action, actor.label)
        # And the final states accept nothing, except an appeal of a closed ticket
        assert state not in ("resolved", "withdrawn"), f"{action} by {role} applied to a {state} ticket"
        if state == "closed":
            assert action == "appeal" and new_state == "stage3"
    # Then the audit trail numbers the ticket's versions 1, 2, 3, ... once each
    versions = [e.version for e in TicketEvent.select().where(TicketEvent.ticket == ticket_id)
                .order_by(TicketEvent.version)]
    assert versions == list(range(1, Ticket.get_by_id(ticket_id).version + 1))
    trail = list(TicketEvent.select().where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.version))
    assert all(a.to_state == b.from_state for a, b in zip(trail, trail[1:]))
