"""The ticket state machine: one declarative table, read by the workers, the desk and the docs.

Each row says: in `state`, `action` by one of `actors` moves the ticket to
`next` when `guard` holds, doing `effects`. Rows are tried in order and the
first whose guard holds wins. The table is checked when this module loads
(see `check_table`) and renders itself for the README (`render_markdown`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from models import compensation as m
from models import rules as r
from models.change import Change, Role
from models.errors import NotAllowed  # raised by `match`; importable from here as before
from models.states import OPEN_STATES, STATES, State

S = State
AGENTS = {1: Role.STAGE1, 2: Role.STAGE2, 3: Role.STAGE3, 4: Role.STAGE4}
PARTIES = frozenset({Role.USER, Role.MERCHANT})
#: Marks a row that keeps the ticket in the state it is in.
SAME = "same"


@dataclass(frozen=True)
class Transition:
    states: frozenset[State | None]
    action: str
    actors: frozenset[Role]
    next: str
    guard: r.Guard | None = None
    effects: tuple[r.Effect, ...] = ()
    #: Publish an ``op.events`` message even though the state does not change.
    announce: bool = False

    def target(self, state: str | None) -> str:
        return state if self.next == SAME else self.next  # type: ignore[return-value]


def T(states: State | None | Iterable[State | None], action: str, actors: Role | Iterable[Role], next: str,
      guard: r.Guard | None = None, effects: Iterable[r.Effect] = (), announce: bool = False) -> Transition:
    states_set = frozenset([states]) if states is None or isinstance(states, State) else frozenset(states)
    actor_set = frozenset([actors]) if isinstance(actors, Role) else frozenset(actors)
    return Transition(states_set, action, actor_set, next, guard, tuple(effects), announce)


#: States in which a party may add evidence without moving the ticket.
EVIDENCE_WELCOME = (S.NEGOTIATING, S.AWAITING_TAKEOVER, S.STAGE1, S.STAGE2, S.STAGE3)

TABLE: tuple[Transition, ...] = (
    # intake: a complaint becomes a ticket
    T(None, "submit", Role.SYSTEM, S.NEGOTIATING, r.negotiation_pending,
      (r.attach_party_evidence, r.start_deadline("merchant_response"))),
    T(None, "submit", Role.SYSTEM, S.AWAITING_TAKEOVER, None, (r.attach_party_evidence, r.reach_floor)),
    T(OPEN_STATES, "link_complaint", Role.SYSTEM, SAME, announce=True),
    # negotiation: the merchant answers, or does not
    T(S.NEGOTIATING, "platform_judgment", Role.MERCHANT, S.AWAITING_TAKEOVER, r.merchant_in_rollout,
      (r.attach_party_evidence, r.reach_floor)),
    T(S.NEGOTIATING, "direct_refund", Role.MERCHANT, S.AWAITING_CONFIRMATION, m.rollout_and_refund_executes,
      (r.attach_party_evidence, m.refund_in_negotiation, r.start_deadline("customer_confirmation"))),
    T(S.NEGOTIATING, "direct_refund", Role.MERCHANT, S.AWAITING_TAKEOVER, r.merchant_in_rollout,
      (r.attach_party_evidence, m.record_refund_failure, r.reach_floor)),
    T(S.NEGOTIATING, "negotiated_reject", Role.MERCHANT, S.AWAITING_CONFIRMATION, r.merchant_in_rollout,
      (r.attach_party_evidence, r.start_deadline("customer_confirmation"))),
    T(S.NEGOTIATING, "intercept_48h", Role.MERCHANT, S.INTERCEPTING, r.merchant_in_rollout,
      (r.attach_party_evidence, r.start_deadline("interception"))),
    T(S.NEGOTIATING, "merchant_response_deadline", Role.SCHEDULER, S.AWAITING_TAKEOVER, None, (r.reach_floor,)),
    T(S.INTERCEPTING, "approve_refund", Role.MERCHANT, S.RESOLVED, m.negotiation_refund_can_execute,
      (m.refund_in_negotiation,)),
    T(S.INTERCEPTING, "approve_refund", Role.MERCHANT, S.AWAITING_TAKEOVER, None,
      (m.record_refund_failure, r.reach_floor)),
    T(S.INTERCEPTING, "interception_deadline", Role.SCHEDULER, S.AWAITING_TAKEOVER, r.order_completed,
      (r.reach_floor,)),
    T(S.INTERCEPTING, "interception_deadline", Role.SCHEDULER, S.AWAITING_TAKEOVER,
      r.interception_already_requested, (r.reach_floor,)),
    T(S.INTERCEPTING, "interception_deadline", Role.SCHEDULER, S.RESOLVED, m.merchant_delivers_and_refund_executes,
      (m.refund_in_negotiation,)),
    T(S.INTERCEPTING, "interception_deadline", Role.SCHEDULER, S.AWAITING_TAKEOVER, r.merchant_delivers,
      (m.record_refund_failure, r.reach_floor)),
    T(S.INTERCEPTING, "interception_deadline", Role.SCHEDULER, SAME, None,
      (r.request_interception, r.start_deadline("interception")), announce=True),
    T(S.INTERCEPTING, "interception_succeeded", Role.SYSTEM, S.RESOLVED, m.negotiation_refund_can_execute,
      (m.refund_in_negotiation,)),
    T(S.INTERCEPTING, "interception_succeeded", Role.SYSTEM, S.AWAITING_TAKEOVER, None,
      (m.record_refund_failure, r.reach_floor)),
    T(S.INTERCEPTING, "interception_failed", Role.SYSTEM, S.AWAITING_TAKEOVER, None, (r.reach_floor,)),
    T(S.AWAITING_CONFIRMATION, "accept_settlement", Role.USER, S.RESOLVED),
    T(S.AWAITING_CONFIRMATION, "decline_settlement", Role.USER, S.AWAITING_TAKEOVER, None, (r.reach_floor,)),
    T(S.AWAITING_CONFIRMATION, "customer_confirmation_deadline", Role.SCHEDULER, S.RESOLVED),
    # stage 1: takeover and dispute status
    T(S.AWAITING_TAKEOVER, "take_over", Role.STAGE1, S.STAGE1, None, (r.assign_to_actor,)),
    T(S.STAGE1, "claim", Role.STAGE1, SAME, r.unassigned, (r.assign_to_actor,)),
    T(S.STAGE1, "request_evidence", Role.STAGE1, S.AWAITING_EVIDENCE, r.below_evidence_cap,
      (r.record_dispute_status, r.request_evidence)),
    T(S.STAGE1, "to_judgment", Role.STAGE1, S.STAGE3, None, (r.record_dispute_status,)),
    # evidence rounds
    T(S.AWAITING_EVIDENCE, "submit_evidence", PARTIES, S.STAGE2, r.completes_evidence, (r.record_evidence,)),
    T(S.AWAITING_EVIDENCE, "submit_evidence", PARTIES, SAME, None, (r.record_evidence,)),
    T(EVIDENCE_WELCOME, "submit_evidence", PARTIES, SAME, None, (r.record_evidence,)),
    T(S.AWAITING_EVIDENCE, "evidence_deadline", Role.SCHEDULER, S.STAGE2),
    # stage 2: evidence review
    T(S.STAGE2, "claim", Role.STAGE2, SAME, r.unassigned, (r.assign_to_actor,)),
    T(S.STAGE2, "request_evidence", Role.STAGE2, S.AWAITING_EVIDENCE, r.below_evidence_cap, (r.request_evidence,)),
    T(S.STAGE2, "to_judgment", Role.STAGE2, S.STAGE3),
    # stage 3: judgment
    T(S.STAGE3, "claim", Role.STAGE3, SAME, r.unassigned_and_not_the_appealed_judge, (r.assign_to_actor,)),
    T(S.STAGE3, "judge", Role.STAGE3, S.AWAITING_PAYMENT, m.needs_goods_returned, (m.record_judgment, m.await_goods)),
    T(S.STAGE3, "judge", Role.STAGE3, S.AWAITING_PAYMENT, m.judged_refund_uncovered,
      (m.record_judgment, m.await_voucher)),
    T(S.STAGE3, "judge", Role.STAGE3, S.STAGE4, r.not_the_appealed_judge, (m.record_judgment, m.deduct_refund)),
    T(S.STAGE3, "cannot_judge", Role.STAGE3, S.STAGE2, r.not_the_appealed_judge),
    # stage 4: verify compensation
    T(S.STAGE4, "claim", Role.STAGE4, SAME, r.unassigned, (r.assign_to_actor,)),
    T(S.STAGE4, "verify_refund", Role.STAGE4, S.CLOSED, m.refund_settled, (r.close,)),
    T(S.STAGE4, "verify_refund", Role.STAGE4, S.CLOSED, m.voucher_pending, (m.verify_offline_transfer, r.close)),
    T(S.STAGE4, "reject_voucher", Role.STAGE4, S.AWAITING_PAYMENT, m.voucher_pending, (m.reject_voucher,)),
    T(S.STAGE4, "complaint_fee", Role.STAGE4, S.CLOSED, m.fee_payable_now, (m.pay_complaint_fee, r.close)),
    T(S.STAGE4, "complaint_fee", Role.STAGE4, SAME, m.fee_needs_approval, (m.request_fee_approval,),
      announce=True),
    T(S.STAGE4, "approve_payment", Role.SUPERVISOR, S.CLOSED, m.fee_approved_by_another,
      (m.execute_approval, r.close)),
    T(S.STAGE4, "approve_payment", Role.SUPERVISOR, SAME, m.advance_approved_by_another, (m.execute_approval,)),
    T(S.STAGE4, "decline_payment", Role.SUPERVISOR, S.AWAITING_PAYMENT, m.advance_approved_by_another,
      (m.decline_approval,)),
    T(S.STAGE4, "decline_payment", Role.SUPERVISOR, SAME, m.fee_pending_for_another, (m.decline_approval,)),
    T(S.AWAITING_PAYMENT, "upload_voucher", Role.MERCHANT, S.STAGE4, m.waiting_for_voucher, (m.record_voucher,)),
    T(S.AWAITING_PAYMENT, "return_goods", Role.USER, S.STAGE4, m.goods_back_and_covered,
      (m.goods_returned, m.deduct_refund)),
    T(S.AWAITING_PAYMENT, "return_goods", Role.USER, SAME, m.waiting_for_goods, (m.goods_returned, m.await_voucher),
      announce=True),
    T(S.AWAITING_PAYMENT, "payment_voucher_deadline", Role.SCHEDULER, S.STAGE4, m.waiting_for_goods,
      (m.goods_never_returned,)),
    T(S.AWAITING_PAYMENT, "payment_voucher_deadline", Role.SCHEDULER, S.STAGE4, m.advance_needs_approval,
      (m.request_advance_approval,)),
    T(S.AWAITING_PAYMENT, "payment_voucher_deadline", Role.SCHEDULER, S.STAGE4, None, (m.platform_advance,)),
    # routing: a claim is a lease
    T((S.STAGE1, S.STAGE2, S.STAGE3, S.STAGE4), "lease_expired", Role.SCHEDULER, SAME, r.assigned,
      (r.release_assignee,)),
    # after the floor
    T(S.CLOSED, "appeal", PARTIES, S.STAGE3, r.within_appeal_window, (r.record_appeal,)),
    T(OPEN_STATES, "withdraw", Role.USER, S.WITHDRAWN),
)

#: Actions an agent takes through ``POST /tickets/{id}/actions``, per stage (claims go through ``/me/claim``).
AGENT_ACTIONS: dict[str, tuple[str, ...]] = {
    "stage1": ("request_evidence", "to_judgment"),
    "stage2": ("request_evidence", "to_judgment"),
    "stage3": ("judge", "cannot_judge"),
    "stage4": ("verify_refund", "reject_voucher", "complaint_fee"),
}
#: Actions a supervisor takes on the desk and API (four eyes on the platform's money).
SUPERVISOR_ACTIONS: tuple[str, ...] = ("approve_payment", "decline_payment")


def rows_for(state: str | None, action: str, role: Role) -> list[Transition]:
    key = None if state is None else State(state)
    return [t for t in TABLE if key in t.states and t.action == action and role in t.actors]


def match(change: Change) -> Transition:
    """The first row whose guard holds for this change; `NotAllowed` when none does, naming the
    guards that said no and carrying the refusal texts they come with (`models.rules.refuses`)."""
    failed: list[str] = []
    refusals: list[str] = []
    for row in rows_for(change.ticket.state, change.action, change.actor.role):
        if row.guard is None or row.guard(change):
            return row
        failed.append(row.guard.__name__)
        text = r.refusal_of(row.guard, change)
        if text is not None:
            refusals.append(text)
    raise NotAllowed(change.ticket.state, change.action, change.actor.role, failed, refusals)


def actions_in(state: str, role: Role) -> list[str]:
    """Every action `role` has a row for in `state`, in table order (guards not evaluated)."""
    seen: list[str] = []
    for t in TABLE:
        if State(state) in t.states and role in t.actors and t.action not in seen:
            seen.append(t.action)
    return seen


def check_table(table: tuple[Transition, ...] = TABLE) -> list[str]:
    """Problems with the table: unreachable states, exits from final states, dead ends."""
    problems: list[str] = []
    edges: dict[State | None, set[State]] = {}
    for t in table:
        for s in t.states:
            target = State(t.target(s)) if s is not None or t.next != SAME else None
            if target is not None:
                edges.setdefault(s, set()).add(target)
            if s is not None and STATES[s].terminal and not (s == S.CLOSED and t.action == "appeal"):
                problems.append(f"final state '{s}' has an exit: {t.action}")
    reachable, frontier = set(), [None]
    while frontier:
        for nxt in edges.get(frontier.pop(), ()):  # type: ignore[arg-type]
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    problems += [f"state '{s}' is unreachable" for s in STATES if s not in reachable]
    for s in OPEN_STATES:
        seen, todo = {s}, [s]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        if not any(STATES[x].terminal for x in seen):
            problems.append(f"state '{s}' cannot reach a final state")
    return problems


def render_markdown(table: tuple[Transition, ...] = TABLE) -> str:
    """The table as Markdown, for the README and the desk's help page."""
    lines = ["| state | action | actor | next state | guard |", "|---|---|---|---|---|"]
    for t in table:
        states = "any open state" if t.states == OPEN_STATES else ", ".join(
            "(new)" if s is None else str(s) for s in sorted(t.states, key=lambda x: str(x)))
        actors = ", ".join(sorted(str(a) for a in t.actors))
        guard = t.guard.__name__ if t.guard else ""
        lines.append(f"| {states} | `{t.action}` | {actors} | {t.next} | {guard} |")
    return "\n".join(lines)


_problems = check_table()
if _problems:  # pragma: no cover - a broken table must not load
    raise RuntimeError("the transition table is inconsistent: " + "; ".join(_problems))


def rewrite_readme(path: str = "README.md") -> None:
    """Put the rendered table between the README's state-table markers (``python -m models.machine``)."""
    from pathlib import Path
    text = Path(path).read_text(encoding="utf-8")
    head, rest = text.split("<!-- state-table:start -->\n", 1)
    _, tail = rest.split("<!-- state-table:end -->", 1)
    Path(path).write_text(f"{head}<!-- state-table:start -->\n{render_markdown()}\n<!-- state-table:end -->{tail}",
                          encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    rewrite_readme()
