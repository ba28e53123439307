"""The analysis of SPEC §1 (``disputes report``, the end of ``disputes demo``), from the database.

Everything is derived from what the system already records — the tickets,
their audit trail (`TicketEvent`), the survey answers and the outbox's
``ledger.*`` events — so the report can be rebuilt at any time for any window
and never disagrees with ``disputes ticket show``. `build_report` returns
plain JSON-ready data (money as integers in minor units, durations as float
seconds, every section present even when empty); `render_report` prints it as
tables or JSON, `write_report` writes JSON, a PNG of charts or a
self-contained HTML page.

One module per noun: `history` (what is read), `flow` (states, types, time,
SLAs, negotiation), `decisions` (evidence rounds, liability, option usage),
`people` (agents, QC, satisfaction), `money`; then `tables`, `charts`, `html`
and `render` for the output.
"""
from __future__ import annotations

from datetime import datetime

from policy import Policy, load_policy
from tools.report import decisions, flow, money, people
from tools.report.history import Moment, Report, iso, load_history
from tools.report.render import FORMATS, render_report, write_report
from tools.report.stats import percentile
from disputes.settings import settings_from_env
from models.base import utcnow

#: Bumped when a key of the JSON form changes meaning or goes away (new keys do not bump it).
REPORT_VERSION = 1

__all__ = ["FORMATS", "REPORT_VERSION", "Report", "build_report", "percentile", "render_report", "write_report"]


def build_report(since: Moment = None, until: Moment = None, *, policy: Policy | None = None,
                 now: datetime | None = None, top_merchants: int = decisions.TOP_MERCHANTS) -> Report:
    """The analysis of tickets created in ``[since, until)`` (ISO text or aware datetimes; naive
    ones are read in the policy calendar's zone). `policy` defaults to ``OP_POLICY``'s."""
    policy = policy or load_policy(settings_from_env().policy_path)
    now = now or utcnow()
    h = load_history(since, until, policy, now)
    return {
        "report_version": REPORT_VERSION,
        "window": {"since": iso(h.start), "until": iso(h.end), "generated_at": iso(now)},
        "tickets": flow.ticket_counts(h),
        "dispute_types": flow.dispute_types(h),
        "dispute_trend": flow.dispute_trend(h),
        "latency": flow.state_latency(h),
        "stages": flow.stage_latency(h),
        "phases": flow.phase_latency(h),
        "evidence_rounds": decisions.evidence_rounds(h),
        "liability": decisions.liability_shares(h, top_merchants),
        "options": decisions.option_usage(h),
        "negotiation": flow.negotiation_outcomes(h),
        "sla": flow.sla_compliance(h),
        "qc": people.qc_verdicts(h.events()),
        "agents": people.agent_figures(h),
        "money": money.money_moved(h),
        "events": money.events_published(h),
        "intake": money.intake_counts(h),
    }
