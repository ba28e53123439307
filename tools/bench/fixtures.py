"""Bulk data for the benchmarks: tickets waiting in the floor's states, and growing a table fast.

Rows go in through peewee's ``insert_many`` (so every column gets its model default, whatever
columns the models grow), and large tables are grown with ``INSERT ... SELECT`` copies of those
rows, which copy every column too.
"""
from __future__ import annotations

from datetime import timedelta

from models.base import database, utcnow
from models.ticket import Ticket

#: What a ticket in each floor state carries so that the stage's action is allowed.
STATE_FIELDS: dict[str, dict[str, object]] = {
    "awaiting_takeover": {},
    "stage1": {},
    "stage2": {"evidence_rounds": 1, "dispute_status": "merchant_timed_out"},
    "stage3": {"evidence_rounds": 1, "dispute_status": "merchant_timed_out"},
    "stage4": {"evidence_rounds": 1, "dispute_status": "merchant_timed_out", "liability": "customer",
               "remedy": "no_refund", "refund_amount": 0},
    "closed": {"evidence_rounds": 1, "dispute_status": "merchant_timed_out", "liability": "customer",
               "remedy": "no_refund", "refund_amount": 0, "complaint_fee": 0},
}


def ticket_row(source: str, i: int, state: str, *, age_seconds: float = 0.0) -> dict[str, object]:
    now = utcnow() - timedelta(seconds=age_seconds)
    row: dict[str, object] = dict(
        source=source, external_ref=f"t{i}", channel="app", user_id=f"u{i}", merchant_id=f"m{i % 997}",
        order_id=f"{source}-o{i}", order_amount=10000, currency="CNY", category="apparel", delivery="platform",
        order_status="delivered", dispute_type="quality", claimed_amount=6000, description="bench",
        occurred_at=now, state=state, version=3, state_version=3, state_entered_at=now, floor_at=now,
        created_at=now)
    if state == "closed":
        row["closed_at"] = now
    row.update(STATE_FIELDS[state])
    return row


def insert_tickets(source: str, counts: dict[str, int], *, start: int = 0, chunk: int = 1000) -> int:
    """Insert `counts[state]` tickets per state (in this process's database); returns how many."""
    i, total = start, 0
    with database.atomic():
        for state, count in counts.items():  # one state at a time: a batch's rows share their columns
            rows = [ticket_row(source, i + n, state, age_seconds=3600 - (i + n) % 3600) for n in range(count)]
            for n in range(0, len(rows), chunk):
                Ticket.insert_many(rows[n:n + chunk]).execute()
            i, total = i + count, total + count
    return total


def copy_rows_sql(table: str, columns: list[str], replace: dict[str, str], source_sql: str) -> str:
    """``INSERT INTO table (columns) SELECT ... FROM (source_sql) s``, each column copied from ``s``
    unless `replace` gives its expression."""
    select = ", ".join(replace.get(c, f"s.{c}") for c in columns)
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) SELECT {select} FROM {source_sql}"


def columns_of(model) -> list[str]:
    return [f.column_name for f in model._meta.sorted_fields if f.column_name != "id"]
