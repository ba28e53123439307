"""A seeded history whose report figures are known by hand, built row by row (no workers).

Four agents (s1..s4, ids 1..4, one per stage) and five tickets; times are
seconds after T0 (Monday 2026-11-23 10:00 in Shanghai) or T1 (a day later):

A  m1 apparel quality      negotiating, merchant silent → floor at 100; stage 1 asks the user for photo+video;
                           deadline → stage 2 → judgment; merchant liable, full refund; verified; closed at 660
B  m1 apparel not_as_desc  straight to the floor; stage 1 → judgment; both liable, partial 3000; closed at 230
C  m2 food    quality      straight; stage 1 asks both for photo; stage 2 asks the merchant for an invoice;
                           judgment: customer liable; complaint fee 500; closed at 760
D  m3 electr. logistics    (day 2) negotiated reject, accepted: resolved at T1+80
E  m2 food    quality      (day 2) straight to the floor at T1, never taken over (3 h late at NOW)

Survey answers: A 5, B 3, C 4 (all credited to s4, who closed them), D 2 (no agent).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import peewee
import pytest

from policy import Policy, default_policy_dict, policy_from_dict
from disputes.wiring import connect_database
from models import init_schema
from models.agent import Agent
from models.audit import TicketEvent
from models.outbox import OutboxEvent
from models.party import SurveyAnswer
from models.ticket import Ticket

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(days=1)
NOW = T1 + timedelta(hours=3)
STAGE1 = {"dispute_status": "not_reconciled"}


@pytest.fixture()
def seeded_db(tmp_path) -> Iterator[peewee.Database]:
    database = connect_database(f"sqlite:///{tmp_path}/insight.db")
    with database.connection_context():
        init_schema()
        yield database


@pytest.fixture()
def report_policy() -> Policy:
    return policy_from_dict(default_policy_dict())


def make_ticket(ref: str, state: str, base: datetime, *, merchant: str, category: str, kind: str,
                floor_after: float | None = None, **fields: object) -> Ticket:
    values: dict[str, object] = dict(
        source="shop", external_ref=ref, channel="app", user_id=f"u-{ref}", merchant_id=merchant, order_id=ref,
        order_amount=20_000, currency="CNY", category=category, delivery="platform", order_status="delivered",
        dispute_type=kind, claimed_amount=10_000, occurred_at=base, created_at=base, state=state,
        floor_at=None if floor_after is None else base + timedelta(seconds=floor_after))
    values.update(fields)
    return Ticket.create(**values)


def trail(ticket: Ticket, base: datetime, *rows: tuple) -> None:
    """Rows of (seconds, from_state, to_state, action, actor[, params[, (verdict, reason, about)]])."""
    for version, (after, from_state, to_state, action, actor, *rest) in enumerate(rows, start=1):
        params = rest[0] if rest else None
        verdict, reason, about = rest[1] if len(rest) > 1 else (None, None, None)
        TicketEvent.create(ticket=ticket.id, version=version, from_state=from_state, to_state=to_state, actor=actor,
                           action=action, params=params, qc_verdict=verdict, qc_reason=reason, qc_about=about,
                           at=base + timedelta(seconds=after))


def ledger(ticket: Ticket, kind: str, amount: int, key: str) -> None:
    body = {"kind": kind, "amount": amount, "currency": "CNY", "idempotency_key": key, "ticket_id": ticket.id}
    OutboxEvent.create(ticket_id=ticket.id, routing_key=f"ledger.{kind}", body=body, published_at=NOW)


OK = ("ok", None, None)


@pytest.fixture()
def seeded(seeded_db: peewee.Database) -> dict[str, Ticket]:
    for stage in (1, 2, 3, 4):
        Agent.create(id=stage, name=f"s{stage}", stage=stage, token_hash=f"hash-{stage}")
    s1, s2, s3, s4 = "agent:1", "agent:2", "agent:3", "agent:4"
    a = make_ticket("A", "closed", T0, merchant="m1", category="apparel", kind="quality", floor_after=100,
                    evidence_rounds=1, liability="merchant", remedy="full_refund",
                    closed_at=T0 + timedelta(seconds=660))
    trail(a, T0, (0, None, "negotiating", "submit", "system"),
          (100, "negotiating", "awaiting_takeover", "merchant_response_deadline", "scheduler"),
          (160, "awaiting_takeover", "stage1", "take_over", s1),
          (200, "stage1", "awaiting_evidence", "request_evidence", s1,
           {**STAGE1, "category": "apparel", "from": "user", "items": ["photo", "video"]}),
          (400, "awaiting_evidence", "stage2", "evidence_deadline", "scheduler"),
          (420, "stage2", "stage2", "claim", s2),
          (500, "stage2", "stage3", "to_judgment", s2, None, ("ok", None, 1)),
          (560, "stage3", "stage3", "claim", s3),
          (600, "stage3", "stage4", "judge", s3, {"liability": "merchant", "remedy": "full_refund"},
           ("flag", "wrong_category", 2)),
          (660, "stage4", "closed", "verify_refund", s4, None, ("ok", None, 3)))
    ledger(a, "refund_deducted", 10_000, "refund:A")
    ledger(a, "refund_deducted", 10_000, "refund:A")  # relayed twice, applied once downstream
    b = make_ticket("B", "closed", T0, merchant="m1", category="apparel", kind="not_as_described", floor_after=0,
                    liability="both", remedy="partial_refund", closed_at=T0 + timedelta(seconds=230))
    trail(b, T0, (0, None, "awaiting_takeover", "submit", "system"),
          (30, "awaiting_takeover", "stage1", "take_over", s1),
          (90, "stage1", "stage3", "to_judgment", s1, {**STAGE1, "category": "apparel"}),
          (190, "stage3", "stage4", "judge", s3, {"liability": "both", "remedy": "partial_refund", "amount": 3000},
           ("ok", None, 1)),
          (230, "stage4", "closed", "verify_refund", s4, None, ("ok", None, 3)))
    ledger(b, "refund_deducted", 3_000, "refund:B")
    c = make_ticket("C", "closed", T0, merchant="m2", category="food", kind="quality", floor_after=0,
                    evidence_rounds=2, liability="customer", remedy="no_refund", complaint_fee=500,
                    closed_at=T0 + timedelta(seconds=760))
    trail(c, T0, (0, None, "awaiting_takeover", "submit", "system"),
          (60, "awaiting_takeover", "stage1", "take_over", s1),
          (120, "stage1", "awaiting_evidence", "request_evidence", s1,
           {"dispute_status": "merchant_timed_out", "category": "food", "from": "both", "items": ["photo"]}),
          (320, "awaiting_evidence", "stage2", "submit_evidence", "user", {"party": "user"}),
          (380, "stage2", "awaiting_evidence", "request_evidence", s2, {"from": "merchant", "items": ["invoice"]},
           ("flag", "unnecessary_evidence_request", 1)),
          (500, "awaiting_evidence", "stage2", "evidence_deadline", "scheduler"),
          (560, "stage2", "stage3", "to_judgment", s2, None, ("ok", None, 1)),
          (700, "stage3", "stage4", "judge", s3, {"liability": "customer", "remedy": "no_refund"}, ("ok", None, 2)),
          (760, "stage4", "closed", "complaint_fee", s4, {"amount": 500}, ("ok", None, 3)))
    ledger(c, "complaint_fee_paid", 500, "fee:C")
    d = make_ticket("D", "resolved", T1, merchant="m3", category="electronics", kind="logistics",
                    negotiation_option="negotiated_reject", state_entered_at=T1 + timedelta(seconds=80))
    trail(d, T1, (0, None, "negotiating", "submit", "system"),
          (50, "negotiating", "awaiting_confirmation", "negotiated_reject", "merchant"),
          (80, "awaiting_confirmation", "resolved", "accept_settlement", "user"))
    e = make_ticket("E", "awaiting_takeover", T1, merchant="m2", category="food", kind="quality", floor_after=0,
                    state_entered_at=T1)
    trail(e, T1, (0, None, "awaiting_takeover", "submit", "system"))
    for ticket, score in ((a, 5), (b, 3), (c, 4), (d, 2)):
        SurveyAnswer.create(ticket_id=ticket.id, user_id=ticket.user_id, score=score)
    return {"A": a, "B": b, "C": c, "D": d, "E": e}
