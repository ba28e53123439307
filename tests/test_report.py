"""`tools.report`: the analysis computed from a small hand-made history with known answers."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from policy import default_policy_dict, policy_from_dict
from tools.report import build_report, percentile, render_report
from disputes.wiring import connect_database
from models import init_schema
from models.audit import TicketEvent
from models.outbox import OutboxEvent
from models.ticket import Ticket

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)  # a Monday, 10:00 in Shanghai
NOW = T0 + timedelta(hours=3)


@pytest.fixture()
def db(tmp_path):
    database = connect_database(f"sqlite:///{tmp_path}/report.db")
    with database.connection_context():
        init_schema()
        yield database


def ticket(ref: str, state: str, *, floor_after: float | None = None, created_after: float = 0, **fields) -> Ticket:
    values = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=10_000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=5_000,
                  occurred_at=T0, created_at=T0 + timedelta(seconds=created_after), state=state,
                  floor_at=None if floor_after is None else T0 + timedelta(seconds=floor_after))
    values.update(fields)
    return Ticket.create(**values)


def trail(t: Ticket, *rows: tuple) -> None:
    """Rows of (seconds after T0, from_state, to_state, action[, qc_verdict, qc_reason])."""
    for version, (after, from_state, to_state, action, *qc) in enumerate(rows, start=1):
        actor = "agent:1" if action in ("take_over", "to_judgment", "request_evidence", "claim", "judge",
                                        "verify_refund", "complaint_fee") else "system"
        TicketEvent.create(ticket=t.id, version=version, from_state=from_state, to_state=to_state, actor=actor,
                           action=action, at=T0 + timedelta(seconds=after),
                           qc_verdict=qc[0] if qc else None, qc_reason=qc[1] if len(qc) > 1 else None)


def ledger(t: Ticket, kind: str, amount: int, key: str) -> None:
    body = {"kind": kind, "amount": amount, "currency": "CNY", "idempotency_key": key, "ticket_id": t.id}
    OutboxEvent.create(ticket_id=t.id, routing_key=f"ledger.{kind}", body=body, published_at=NOW)


@pytest.fixture()
def history(db):
    """A: negotiated, merchant silent, to the floor, judged merchant liable, refunded.
    B: straight to the floor, one evidence round, judged customer liable, complaint fee.
    C: settled in negotiation (negotiated reject, accepted). D: on the floor 2 h, never taken over."""
    a = ticket("A", "closed", floor_after=10, liability="merchant", remedy="full_refund", refund_amount=5_000,
               closed_at=T0 + timedelta(seconds=200))
    trail(a, (0, None, "negotiating", "submit"), (10, "negotiating", "awaiting_takeover", "merchant_response_deadline"),
          (70, "awaiting_takeover", "stage1", "take_over"), (100, "stage1", "stage3", "to_judgment"),
          (110, "stage3", "stage3", "claim"), (160, "stage3", "stage4", "judge", "ok"),
          (200, "stage4", "closed", "verify_refund", "flag", "wrong_liability"))
    ledger(a, "refund_deducted", 5_000, "refund:A")
    ledger(a, "refund_deducted", 5_000, "refund:A")  # relayed twice: applied once downstream
    b = ticket("B", "closed", floor_after=0, evidence_rounds=1, liability="customer", remedy="no_refund",
               complaint_fee=500, category="food", closed_at=T0 + timedelta(seconds=260))
    trail(b, (0, None, "awaiting_takeover", "submit"), (30, "awaiting_takeover", "stage1", "take_over"),
          (40, "stage1", "awaiting_evidence", "request_evidence"),
          (100, "awaiting_evidence", "stage2", "evidence_deadline"), (120, "stage2", "stage3", "to_judgment", "ok"),
          (200, "stage3", "stage4", "judge", "ok"), (260, "stage4", "closed", "complaint_fee", "ok"))
    ledger(b, "complaint_fee_paid", 500, "fee:B")
    c = ticket("C", "resolved", negotiation_option="negotiated_reject", state_entered_at=T0 + timedelta(seconds=8))
    trail(c, (0, None, "negotiating", "submit"), (5, "negotiating", "awaiting_confirmation", "negotiated_reject"),
          (8, "awaiting_confirmation", "resolved", "accept_settlement"))
    d = ticket("D", "awaiting_takeover", floor_after=3600, created_after=3600,
               state_entered_at=T0 + timedelta(seconds=3600))
    trail(d, (3600, None, "awaiting_takeover", "submit"))
    return a, b, c, d


def report(**kwargs) -> dict:
    return build_report(policy=policy_from_dict(default_policy_dict()), now=NOW, **kwargs)


def test_tickets_are_counted_per_terminal_state_and_per_state(history):
    tickets = report()["tickets"]
    assert tickets["total"] == 4 and tickets["open"] == 1
    assert tickets["terminal"] == {"resolved": 1, "closed": 2, "withdrawn": 0}
    assert tickets["by_state"] == {"awaiting_takeover": 1, "resolved": 1, "closed": 2}


def test_time_per_stage_runs_from_entering_a_state_to_leaving_it_and_ignores_same_state_rows(history):
    latency = report()["latency"]
    assert latency["awaiting_takeover"] == {"visible": True, "count": 2, "median_s": 45.0, "p95_s": 60.0}
    assert latency["stage1"]["median_s"] == 20.0
    assert latency["stage3"]["count"] == 2 and latency["stage3"]["median_s"] == 70.0  # the claim does not end it
    assert latency["stage4"]["median_s"] == 50.0
    assert latency["awaiting_evidence"] == {"visible": False, "count": 1, "median_s": 60.0, "p95_s": 60.0}


def test_liability_shares_and_evidence_rounds_cover_the_judged_and_the_floor_tickets(history):
    data = report()
    assert data["liability"]["shares"] == {"merchant": 0.5, "customer": 0.5}
    assert data["evidence_rounds"]["distribution"] == {"0": 2, "1": 1}
    assert data["evidence_rounds"]["by_category"] == {"apparel": {"tickets": 2, "mean": 0.0},
                                                      "food": {"tickets": 1, "mean": 1.0}}


def test_negotiation_outcomes_say_what_was_settled_without_an_agent(history):
    negotiation = report()["negotiation"]
    assert negotiation["tickets"] == 2 and negotiation["straight_to_floor"] == 2
    assert negotiation["resolved_without_agent"] == 1
    assert negotiation["resolved_by"] == {"accept_settlement": 1}
    assert negotiation["by_option"]["negotiated_reject"]["resolved"] == 1
    assert negotiation["by_option"]["no_answer"]["to_floor"] == 1


def test_sla_compliance_counts_a_ticket_waiting_past_the_accept_promise_as_breached(history):
    sla = report()["sla"]
    assert sla["accept"] == {"met": 2, "breached": 1, "pending": 0, "compliance": round(2 / 3, 4)}
    assert sla["resolve"] == {"met": 2, "breached": 0, "pending": 1, "compliance": 1.0}


def test_money_is_summed_per_ledger_kind_in_integer_minor_units_once_per_idempotency_key(history):
    money = report()["money"]
    assert money == {"complaint_fee_paid": {"CNY": 500}, "refund_deducted": {"CNY": 5_000}}
    assert all(isinstance(v, int) for by_currency in money.values() for v in by_currency.values())


def test_qc_verdicts_and_published_events_are_counted(history):
    data = report()
    assert data["qc"] == {"ok": 4, "flag": 1, "reasons": {"wrong_liability": 1}}
    assert data["events"]["by_routing_key"] == {"ledger.complaint_fee_paid": 1, "ledger.refund_deducted": 2}


def test_a_window_keeps_only_tickets_created_in_it(history):
    data = report(since=(T0 + timedelta(minutes=30)).isoformat())
    assert data["tickets"]["total"] == 1 and data["money"] == {}
    assert report(until="2026-11-23T10:30:00")["tickets"]["total"] == 3  # naive: the calendar's zone (+08:00)


def test_an_empty_database_gives_an_empty_report(db):
    data = report()
    assert data["tickets"]["total"] == 0 and data["latency"] == {} and data["liability"]["shares"] == {}
    assert data["sla"]["accept"]["compliance"] is None


def test_the_report_renders_as_tables_and_as_json(history):
    data = report()
    out = io.StringIO()
    render_report(data, Console(file=out, width=120), format="table")
    assert "50.00 CNY" in out.getvalue() and "stage3" in out.getvalue()
    out = io.StringIO()
    render_report(data, Console(file=out, width=120), format="json")
    assert json.loads(out.getvalue())["tickets"]["total"] == 4
    with pytest.raises(ValueError):
        render_report(data, Console(file=io.StringIO()), format="xml")


def test_percentile_is_nearest_rank():
    assert percentile([], 95) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 95) == 95.0


def test_negotiation_outcomes_say_how_each_answer_was_settled(history):
    by_option = report()["negotiation"]["by_option"]
    assert by_option["negotiated_reject"]["resolved_by"] == {"accept_settlement": 1}
    assert by_option["no_answer"]["resolved_by"] == {}


def test_the_tables_read_at_80_columns_with_captions_in_words(history):
    out = io.StringIO()
    render_report(report(), Console(file=out, width=80), format="table")
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    # one table per question, each once
    for title in ("Tickets: 4, 1 open", "Time per state", "Negotiation: 2 tickets negotiated", "Money moved",
                  "Events published"):
        assert text.count(title) == 1, title
    assert "dim: hidden" not in text
    assert "dimmed: states no agent works on" in text and "dimmed: still open, by state" in text
    assert "buyer accepted" in text  # how the negotiation settled, in words
    assert "refunds taken from the merchant's funds" in text  # what a ledger kind is
    assert "policy [options.stageN]" in text  # text is shown as it is, not read as markup
