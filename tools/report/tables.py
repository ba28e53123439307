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


def _states(r: dict) -> Table:
    tickets = r["tickets"]
    t = Table("states", f"Tickets: {tickets['total']}, {tickets['open']} open", ("state", "tickets"))
    for state, n in tickets["terminal"].items():
        t.add(state, n)
    for state, n in tickets["by_state"].items():
        if state not in tickets["terminal"]:
            t.add(state, n, muted=True)
    return t


def _types(r: dict) -> Table:
    days = r["dispute_trend"]["days"]
    caption = f"{days[0]} to {days[-1]}" if days else None
    t = Table("types", "Dispute types", ("type", "tickets"), caption=caption)
    for kind, n in r["dispute_types"].items():
        t.add(kind, n)
    return t


def _latency(r: dict) -> Table:
    t = Table("latency", "Time per state (dim: hidden)", ("state", "stays", "median", "p95"))
    for state, s in r["latency"].items():
        t.add(state, s["count"], duration_label(s["median_s"]), duration_label(s["p95_s"]), muted=not s["visible"])
    return t


def _stages(r: dict) -> Table:
    t = Table("stages", "Time per stage visit and phase", ("stage / phase", "count", "median", "p95"))
    for name, s in [*r["stages"].items(), *r["phases"].items()]:
        t.add(name.replace("_", " "), s["count"], duration_label(s["median_s"]), duration_label(s["p95_s"]),
              muted=name in r["phases"])
    return t


def _sla(r: dict) -> Table:
    t = Table("sla", "SLA compliance (floor tickets)", ("promise", "met", "breached", "pending", "compliance"))
    for name, c in r["sla"].items():
        t.add(name.replace("_", " "), c["met"], c["breached"], c["pending"], percent_label(c["compliance"]))
    return t


def _rounds(r: dict) -> Table:
    ev = r["evidence_rounds"]
    t = Table("rounds", f"Evidence rounds: {ev['tickets']} on the floor", ("rounds", "tickets"))
    for k, n in ev["distribution"].items():
        t.add(k, n)
    return t


def _rounds_by_category(r: dict) -> Table:
    t = Table("rounds_by_category", "Rounds per category", ("category", "tickets", "mean"))
    for key, c in r["evidence_rounds"]["by_category"].items():
        t.add(key, c["tickets"], f"{c['mean']:.2f}")
    return t


def _rounds_by_type(r: dict) -> Table:
    t = Table("rounds_by_type", "Rounds per dispute type", ("dispute type", "tickets", "mean"))
    for key, c in r["evidence_rounds"]["by_dispute_type"].items():
        t.add(key, c["tickets"], f"{c['mean']:.2f}")
    return t


def _requested(r: dict) -> Table:
    requested = r["evidence_rounds"]["requested"]
    t = Table("requested", "Evidence asked for, per category", ("category", "items asked for"),
              caption=f"from: {_inline(requested['from'])}")
    for category, kinds in requested["items_by_category"].items():
        t.add(category, _inline(kinds))
    return t


def _liability(r: dict) -> Table:
    li = r["liability"]
    t = Table("liability", f"Liability: {li['judged']} judged", ("liability", "tickets", "share"))
    for k, n in li["counts"].items():
        t.add(k, n, percent_label(li["shares"][k]))
    for k, n in li["remedies"].items():
        t.add(f"remedy {k}", n, "", muted=True)
    return t


def _liability_by_category(r: dict) -> Table:
    t = Table("liability_by_category", "Liability per category", ("category", "judged", "merchant side", "counts"))
    for category, c in r["liability"]["by_category"].items():
        t.add(category, c["judged"], percent_label(c["merchant_side_share"]), _inline(c["counts"]))
    return t


def _merchants(r: dict) -> Table:
    li = r["liability"]
    t = Table("merchants", f"Top merchants by merchant-liable disputes (of {li['merchants']})",
              ("merchant", "merchant liable", "judged", "share"))
    for m in li["top_merchants"]:
        t.add(m["merchant_id"], m["merchant_liable"], m["judged"], percent_label(m["share"]))
    return t


def _options(r: dict) -> Table:
    t = Table("options", "Option usage per stage", ("stage", "action", "uses", "never chosen", "always chosen"))
    for stage, s in r["options"].items():
        for action, a in s["actions"].items():
            never = ", ".join(f"{p}={c}" for p, spec in a["params"].items() for c in spec["never"])
            always = ", ".join(f"{p}={c}" for p, spec in a["params"].items() for c in spec["always"]
                               if len(spec["counts"]) > 1)
            t.add(stage, action, a["uses"], "(the action itself)" if not a["uses"] else never or "-", always or "-",
                  muted=not a["uses"])
    return t


def _negotiation(r: dict) -> Table:
    ne = r["negotiation"]
    title = f"Negotiation: {ne['tickets']} negotiated, {ne['straight_to_floor']} straight to the floor"
    t = Table("negotiation", title,
              ("merchant answer", "tickets", "resolved", "to floor", "withdrawn", "open"),
              caption=f"settled without an agent: {ne['resolved_without_agent']} ({_inline(ne['resolved_by'])})")
    for option, c in ne["by_option"].items():
        t.add(option, *(c[k] for k in ("tickets", "resolved", "to_floor", "withdrawn", "open")))
    return t


def _qc(r: dict) -> Table:
    t = Table("qc", "Quality checks", ("verdict", "decisions"))
    t.add("ok", r["qc"]["ok"])
    t.add("flag", r["qc"]["flag"])
    for reason, n in r["qc"]["reasons"].items():
        t.add(f"flag {reason}", n, muted=True)
    return t


def _agent_stages(r: dict) -> Table:
    sat = r["agents"]["satisfaction"]
    t = Table("agent_stages", "Agents per stage", ("stage", "agents", "decisions", "QC flags", "satisfaction"),
              caption=f"survey answers: {sat['answers']}, mean {_score(sat['mean'])}")
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
    t = Table("money", "Money moved (ledger)", ("kind", "amount"))
    for kind, by_currency in r["money"].items():
        for currency, amount in by_currency.items():
            t.add(kind, money_label(amount, currency)["en"])
    return t


def _events(r: dict) -> Table:
    ev = r["events"]
    t = Table("events", f"Events published: {ev['published']}", ("routing key", "events"),
              caption=f"{ev['unpublished']} waiting in the outbox")
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
