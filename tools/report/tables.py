"""The report as tables: built once from the JSON form, drawn by rich (terminal) or as HTML.

A `Table` is plain data — title, columns, rows of text — so the terminal and
the HTML page show the same figures with the same wording.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tools.report.history import Report
from tools.report.stats import duration_label, percent_label
from policy.options import money_label


@dataclass
class Row:
    cells: tuple[str, ...]
    #: A detail row (remedies under liabilities, reasons under flags): shown dimmed.
    muted: bool = False


@dataclass
class Table:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    caption: str | None = None

    def add(self, *cells: object, muted: bool = False) -> None:
        self.rows.append(Row(tuple(str(c) for c in cells), muted))


def report_tables(report: Report) -> dict[str, Table]:
    """Every table of the report, by key, in reading order."""
    r: dict = report  # type: ignore[assignment]
    tables = [builder(r) for builder in BUILDERS]
    return {t.key: t for t in tables}


#: How a ticket settled in negotiation ended, by the action that resolved it (the machine's rows
#: into ``resolved``), in words.
RESOLVED_BY: dict[str, str] = {
    "accept_settlement": "buyer accepted",
    "customer_confirmation_deadline": "buyer silent",
    "approve_refund": "merchant refunded",
    "interception_succeeded": "parcel intercepted",
    "interception_deadline": "countdown ran out",
}
#: What each kind of ledger movement is (``ledger.<kind>`` of the contract, and the internal ones).
LEDGER_KINDS: dict[str, str] = {
    "balance_sync": "merchant funds reported by the payments system",
    "refund_deducted": "refunds taken from the merchant's funds",
    "offline_transfer": "refunds the merchant paid by bank transfer (voucher)",
    "platform_advance": "refunds the platform paid for a merchant",
    "debt_recorded": "what the merchant owes for an advance",
    "debt_settled": "debts recovered from the merchant's new income",
    "complaint_fee_paid": "complaint fees the platform paid buyers",
}
#: Who the evidence was asked of (``request_evidence``'s ``from``), in words.
ASKED_OF = {"user": "the buyer", "merchant": "the merchant", "both": "both"}


def _states(r: dict) -> Table:
    tickets = r["tickets"]
    caption = ("resolved: settled in negotiation, without an agent; closed: decided by the agents "
               "(stages 1-4); withdrawn: by the buyer")
    if tickets["open"]:
        caption += "; dimmed: still open, by state"
    t = Table("states", f"Tickets: {tickets['total']}, {tickets['open']} open", ("state", "tickets"),
              caption=caption)
    for state, n in tickets["terminal"].items():
        t.add(state, n)
    for state, n in tickets["by_state"].items():
        if state not in tickets["terminal"]:
            t.add(state, n, muted=True)
    return t


def _types(r: dict) -> Table:
    days = r["dispute_trend"]["days"]
    caption = None
    if days:
        caption = f"created on {days[0]}" if days[0] == days[-1] else f"created {days[0]} to {days[-1]}"
    t = Table("types", "Dispute types", ("type", "tickets"), caption=caption)
    for kind, n in r["dispute_types"].items():
        t.add(kind, n)
    return t


def _latency(r: dict) -> Table:
    t = Table("latency", "Time per state", ("state", "stays", "median", "p95"),
              caption="stays: times a ticket entered the state and left it; median, p95: half, 95 % of the "
                      "stays were shorter; dimmed: states no agent works on (the ticket waits for the "
                      "merchant, the buyer or logistics; closed until an appeal)")
    for state, s in r["latency"].items():
        t.add(state, s["count"], duration_label(s["median_s"]), duration_label(s["p95_s"]), muted=not s["visible"])
    return t


#: The phases of `flow.phase_latency`, in words.
PHASES = {"negotiation": "phase: negotiation", "floor": "phase: with the agents", "end_to_end": "phase: end to end"}


def _stages(r: dict) -> Table:
    t = Table("stages", "Time per stage visit and phase", ("stage / phase", "count", "median", "p95"),
              caption="a stage visit: from entering the stage's queue (awaiting_takeover counts for stage 1) "
                      "until leaving it; dimmed, whole phases: negotiation (until it left negotiation), with "
                      "the agents (from reaching stage 1 until final), end to end (from the complaint until "
                      "final)")
    for name, s in [*r["stages"].items(), *r["phases"].items()]:
        t.add(PHASES.get(name, name), s["count"], duration_label(s["median_s"]), duration_label(s["p95_s"]),
              muted=name in r["phases"])
    return t


def _sla(r: dict) -> Table:
    t = Table("sla", "SLA compliance (tickets that reached the agents)",
              ("promise", "met", "breached", "pending", "compliance"),
              caption="the promises to the buyer, in working time: accept (an agent takes the ticket over), "
                      "first feedback (stage 1's first decision), resolve (final); pending: neither met nor "
                      "late yet; compliance: met / (met + breached)")
    for name, c in r["sla"].items():
        t.add(name.replace("_", " "), c["met"], c["breached"], c["pending"], percent_label(c["compliance"]))
    return t


def _rounds(r: dict) -> Table:
    ev = r["evidence_rounds"]
    t = Table("rounds", f"Evidence rounds: {ev['tickets']} tickets reached the agents", ("rounds", "tickets"),
              caption="a round: the agents ask the buyer, the merchant or both for evidence and wait for it")
    for k, n in ev["distribution"].items():
        t.add(k, n)
    return t


def _rounds_by_category(r: dict) -> Table:
    t = Table("rounds_by_category", "Evidence rounds per category", ("category", "tickets", "mean rounds"))
    for key, c in r["evidence_rounds"]["by_category"].items():
        t.add(key, c["tickets"], f"{c['mean']:.2f}")
    return t


def _rounds_by_type(r: dict) -> Table:
    t = Table("rounds_by_type", "Evidence rounds per dispute type", ("dispute type", "tickets", "mean rounds"))
    for key, c in r["evidence_rounds"]["by_dispute_type"].items():
        t.add(key, c["tickets"], f"{c['mean']:.2f}")
    return t


def _requested(r: dict) -> Table:
    requested = r["evidence_rounds"]["requested"]
    asked = {ASKED_OF.get(k, k): n for k, n in requested["from"].items()}
    t = Table("requested", "Evidence asked for, per category", ("category", "items asked for (times)"),
              caption=f"requests made of {_inline(asked)}" if asked else None)
    for category, kinds in requested["items_by_category"].items():
        t.add(category, _inline(kinds))
    return t


def _liability(r: dict) -> Table:
    li = r["liability"]
    t = Table("liability", f"Liability: {li['judged']} judged", ("liability", "tickets", "share"),
              caption="who the judgment (stage 3) found liable; dimmed: the remedy it ordered")
    for k, n in li["counts"].items():
        t.add(k, n, percent_label(li["shares"][k]))
    for k, n in li["remedies"].items():
        t.add(f"remedy {k}", n, "", muted=True)
    return t


def _liability_by_category(r: dict) -> Table:
    t = Table("liability_by_category", "Liability per category", ("category", "judged", "merchant side", "counts"),
              caption="merchant side: the merchant or both found liable")
    for category, c in r["liability"]["by_category"].items():
        t.add(category, c["judged"], percent_label(c["merchant_side_share"]), _inline(c["counts"]))
    return t


def _merchants(r: dict) -> Table:
    li = r["liability"]
    t = Table("merchants", f"Top merchants by merchant-liable disputes (of {li['merchants']} judged)",
              ("merchant", "merchant liable", "judged", "share"),
              caption="merchant liable: judged liable alone or with the buyer")
    for m in li["top_merchants"]:
        t.add(m["merchant_id"], m["merchant_liable"], m["judged"], percent_label(m["share"]))
    return t


def _options(r: dict) -> Table:
    t = Table("options", "Option usage per stage", ("stage", "action", "uses", "never chosen", "always chosen"),
              caption="uses: the agents' decisions with the action; never / always chosen: the choices of the "
                      "stage's option box (policy [options.stageN]) never or every time picked; dimmed: actions "
                      "never used")
    for stage, s in r["options"].items():
        for action, a in s["actions"].items():
            never = _choices({p: spec["never"] for p, spec in a["params"].items()})
            always = _choices({p: spec["always"] for p, spec in a["params"].items() if len(spec["counts"]) > 1})
            t.add(stage, action, a["uses"], "(the action itself)" if not a["uses"] else never or "-", always or "-",
                  muted=not a["uses"])
    return t


def _choices(by_param: dict[str, list[str]]) -> str:
    """``reason_code: illegible, other; items: voucher`` (parameters with no code left out)."""
    return "; ".join(f"{param}: {', '.join(codes)}" for param, codes in by_param.items() if codes)


def _negotiation(r: dict) -> Table:
    ne = r["negotiation"]
    title = f"Negotiation: {ne['tickets']} tickets negotiated, {ne['straight_to_floor']} went straight to the agents"
    t = Table("negotiation", title,
              ("merchant's answer", "tickets", "settled", "to agents", "withdrawn", "open"),
              caption=f"settled: resolved in negotiation, without an agent ({ne['resolved_without_agent']} in all; "
                      "dimmed: how); no_answer: none before the deadline")
    for option, c in ne["by_option"].items():
        t.add(option, *(c[k] for k in ("tickets", "resolved", "to_floor", "withdrawn", "open")))
        for action, n in (c.get("resolved_by") or {}).items():
            t.add(f"  {RESOLVED_BY.get(action, action)}", "", n, "", "", "", muted=True)
    return t


def _qc(r: dict) -> Table:
    t = Table("qc", "Quality checks", ("verdict", "decisions"),
              caption="each agent's decision is checked at the next stage: ok, or flagged; dimmed: why")
    t.add("ok", r["qc"]["ok"])
    t.add("flag", r["qc"]["flag"])
    for reason, n in r["qc"]["reasons"].items():
        t.add(f"flag {reason}", n, muted=True)
    return t


def _agent_stages(r: dict) -> Table:
    sat = r["agents"]["satisfaction"]
    t = Table("agent_stages", "Agents per stage", ("stage", "agents", "decisions", "QC flags", "satisfaction"),
              caption="decisions: every action but a claim (take-overs included); QC flags: decisions the next "
                      "stage flagged; satisfaction: the buyers' survey score for the tickets the agents closed "
                      f"(answers in brackets); all survey answers: {sat['answers']}, mean {_score(sat['mean'])}")
    for stage, s in r["agents"]["by_stage"].items():
        t.add(stage, s["agents"], s["decisions"], f"{s['qc_flag']} ({percent_label(s['flag_rate'])})",
              _score(s["satisfaction"], s["surveys"]))
    return t


def _agents(r: dict) -> Table:
    rows = r["agents"]["agents"]
    t = Table("agents", "Agents (most decisions first)", ("agent", "stage", "decisions", "tickets", "QC flags",
                                                          "satisfaction"),
              caption=f"{len(rows) - 20} more in the JSON form" if len(rows) > 20 else None)
    for a in rows[:20]:
        t.add(a["name"] or f"#{a['agent_id']}", a["stage"] or "-", a["decisions"], a["tickets"],
              f"{a['qc_flag']} ({percent_label(a['flag_rate'])})", _score(a["satisfaction"], a["surveys"]))
    return t


def _money(r: dict) -> Table:
    t = Table("money", "Money moved", ("kind", "amount", "what it is"),
              caption="the ledger.* events published for these tickets, each movement counted once")
    for kind, by_currency in r["money"].items():
        for currency, amount in by_currency.items():
            t.add(kind, money_label(amount, currency)["en"], LEDGER_KINDS.get(kind, ""))
    return t


def _events(r: dict) -> Table:
    ev = r["events"]
    t = Table("events", f"Events published: {ev['published']}", ("routing key", "events"),
              caption=f"on op.events, for these tickets; {ev['unpublished']} still waiting in the outbox "
                      "(committed, not sent yet)")
    for key, n in ev["by_routing_key"].items():
        t.add(key, n)
    return t


def _inline(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items()) or "none"


def _score(value: float | None, answers: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} / 5" + (f" ({answers})" if answers is not None else "")


BUILDERS: tuple[Callable[[dict], Table], ...] = (
    _states, _types, _latency, _stages, _sla, _rounds, _rounds_by_category, _rounds_by_type, _requested,
    _liability, _liability_by_category, _merchants, _options, _negotiation, _qc, _agent_stages, _agents, _money,
    _events,
)
