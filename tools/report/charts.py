"""The report as charts (matplotlib, Agg): one chart per question, readable at a glance.

Charts are drawn from the report's JSON form only, so any stored report can be
drawn again. Figures are built with `matplotlib.figure.Figure` directly — no
pyplot, no global figure state, safe in a server thread. matplotlib is imported when a
chart is drawn, not with this module, so that tables and JSON never load it (start-up time).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tools.report.history import Report
from policy.options import money_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Liability colours: merchant side warm, customer side cool.
LIABILITY_COLOURS = {"merchant": "#d62728", "both": "#ff7f0e", "customer": "#1f77b4", "neither": "#9e9e9e"}
OUTCOME_COLOURS = {"resolved": "#2ca02c", "to_floor": "#d62728", "withdrawn": "#9e9e9e", "open": "#c7c7c7"}
GOOD, WARN, BAD, MUTED = "#2ca02c", "#ff7f0e", "#d62728", "#c7c7c7"
#: Dots per inch of the PNGs.
DPI = 110


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    draw: Callable[[Axes, dict], None]


def chart_png(report: Report, key: str, *, size: tuple[float, float] = (9.0, 5.0)) -> bytes:
    """One chart as a PNG."""
    chart = CHARTS[key]
    figure = _figure(figsize=size)
    ax = figure.add_subplot()
    _draw(chart, ax, report)
    return _png(figure)


def chart_pngs(report: Report) -> dict[str, bytes]:
    """Every chart as its own PNG, by key."""
    return {key: chart_png(report, key) for key in CHARTS}


def overview_png(report: Report) -> bytes:
    """Every chart on one page, two columns, titled with the report's window."""
    charts = list(CHARTS.values())
    rows = (len(charts) + 1) // 2
    figure = _figure(figsize=(18.0, 5.2 * rows))
    figure.suptitle(_window_title(report), fontsize=18, fontweight="bold")
    for i, chart in enumerate(charts):
        _draw(chart, figure.add_subplot(rows, 2, i + 1), report)
    return _png(figure)


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure  # start-up time: only when a chart is drawn
    return Figure(figsize=figsize, layout="constrained")


def _draw(chart: Chart, ax: Axes, report: Report) -> None:
    ax.set_title(chart.title, loc="left", fontsize=13, fontweight="bold")
    chart.draw(ax, report)  # type: ignore[arg-type]
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _png(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, facecolor="white")
    return out.getvalue()


def _window_title(r: Report) -> str:
    w: dict = r["window"]  # type: ignore[assignment]
    span = f"{w['since'][:10] if w['since'] else 'the beginning'} to {w['until'][:10] if w['until'] else 'now'}"
    return f"Disputes report — {r['tickets']['total']} tickets, {span}"  # type: ignore[index]


def _at(ax: Axes, labels: list[str], axis: str) -> list[int]:
    """Positions 0..n-1 for `labels`, written on the `axis` ("x" or "y") as its tick labels (codes
    such as merchant ids are names, never numbers or dates to parse)."""
    positions = list(range(len(labels)))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(positions, labels)
    return positions


def _empty(ax: Axes, what: str = "no data in this window") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", fontsize=12, color="#777777", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# ---- the charts --------------------------------------------------------------------------------

def _trend(ax: Axes, r: dict) -> None:
    trend = r["dispute_trend"]
    days, series = trend["days"], trend["by_type"]
    if not days:
        return _empty(ax)
    if len(days) == 1:
        kinds = list(r["dispute_types"])[::-1]
        bars = ax.barh(_at(ax, kinds, "y"), [r["dispute_types"][k] for k in kinds], color="#4c72b0")
        ax.bar_label(bars, padding=3)
        ax.set_xlabel(f"new tickets on {days[0]}")
        return None
    bottom = [0] * len(days)
    x = list(range(len(days)))
    for kind, counts in series.items():
        ax.bar(x, counts, bottom=bottom, label=kind, width=0.85)
        bottom = [b + c for b, c in zip(bottom, counts)]
    step = max(1, len(days) // 10)
    ax.set_xticks(x[::step], [d[5:] for d in days[::step]], rotation=0)
    ax.set_ylabel("new tickets per day")
    ax.legend(fontsize=8, ncols=3, frameon=False, loc="upper left")
    return None


def _latency(ax: Axes, r: dict) -> None:
    rows = [(state, s) for state, s in r["latency"].items() if s["median_s"] is not None]
    if not rows:
        return _empty(ax)
    rows.reverse()
    top = max(s["p95_s"] for _, s in rows)
    unit, scale = next((u, v) for u, v in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1))
                       if top >= 2 * v or v == 1)
    labels = [state if s["visible"] else f"{state} (hidden)" for state, s in rows]
    y = list(range(len(rows)))
    ax.barh(y, [s["p95_s"] / scale for _, s in rows], color=MUTED, label="p95", height=0.7)
    bars = ax.barh(y, [s["median_s"] / scale for _, s in rows], color=["#4c72b0" if s["visible"] else "#8da0cb"
                                                                       for _, s in rows], label="median", height=0.7)
    ax.bar_label(bars, labels=[f"{s['median_s'] / scale:.1f}" for _, s in rows], padding=3, fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"{unit} in the state (median over p95)")
    ax.legend(frameon=False, loc="lower right")
    return None


def _sla(ax: Axes, r: dict) -> None:
    items = [(name.replace("_", " "), c) for name, c in r["sla"].items()]
    if not any(c["met"] + c["breached"] for _, c in items):
        return _empty(ax, "no floor ticket has met or missed a promise yet")
    values = [100 * (c["compliance"] or 0) for _, c in items]
    colours = [GOOD if v >= 95 else WARN if v >= 80 else BAD for v in values]
    bars = ax.bar(_at(ax, [name for name, _ in items], "x"), values, color=colours, width=0.6)
    ax.bar_label(bars, labels=[f"{v:.0f}%\n{c['met']} met, {c['breached']} late, {c['pending']} pending"
                               for v, (_, c) in zip(values, items)], padding=3, fontsize=9)
    ax.set_ylim(0, 125)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.axhline(95, color="#555555", linestyle=":", linewidth=1)
    ax.set_ylabel("% of floor tickets on time")
    return None


def _rounds(ax: Axes, r: dict) -> None:
    grid = r["evidence_rounds"]["by_category_and_type"]
    if not grid:
        return _empty(ax)
    categories = list(grid)
    types = sorted({t for row in grid.values() for t in row})
    values = [[grid[c].get(t) for t in types] for c in categories]
    flat = [v for row in values for v in row if v is not None]
    image = ax.imshow([[v if v is not None else float("nan") for v in row] for row in values], cmap="Oranges",
                      vmin=0, vmax=max(1.0, max(flat)), aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v is not None:
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=9,
                        color="white" if v > 0.6 * max(1.0, max(flat)) else "black")
    ax.set_xticks(range(len(types)), [t.replace("_", "\n") for t in types], fontsize=8)
    ax.set_yticks(range(len(categories)), categories)
    ax.figure.colorbar(image, ax=ax, label="mean evidence rounds", shrink=0.8)
    return None


def _liability(ax: Axes, r: dict) -> None:
    li = r["liability"]
    if not li["judged"]:
        return _empty(ax, "nothing judged in this window")
    rows = [("all categories", li["judged"], li["counts"])]
    categories = sorted(li["by_category"].items(), key=lambda kv: -kv[1]["judged"])
    rows += [(c, v["judged"], v["counts"]) for c, v in categories]
    rows.reverse()
    y = list(range(len(rows)))
    left = [0.0] * len(rows)
    for kind, colour in LIABILITY_COLOURS.items():
        widths = [100 * counts.get(kind, 0) / judged for _, judged, counts in rows]
        bars = ax.barh(y, widths, left=left, color=colour, label=kind, height=0.7)
        ax.bar_label(bars, labels=[f"{w:.0f}%" if w >= 8 else "" for w in widths], label_type="center",
                     color="white", fontsize=9, fontweight="bold")
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(y, [f"{name} (n={judged})" for name, judged, _ in rows])
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of judged disputes")
    ax.legend(ncols=4, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return None


def _merchants(ax: Axes, r: dict) -> None:
    top = r["liability"]["top_merchants"]
    if not top:
        return _empty(ax, "no merchant-liable dispute in this window")
    top = top[::-1]
    names = _at(ax, [m["merchant_id"] for m in top], "y")
    ax.barh(names, [m["judged"] for m in top], color=MUTED, label="judged", height=0.7)
    bars = ax.barh(names, [m["merchant_liable"] for m in top], color=LIABILITY_COLOURS["merchant"],
                   label="merchant liable (merchant or both)", height=0.7)
    ax.bar_label(bars, labels=[f"{m['merchant_liable']} ({100 * (m['share'] or 0):.0f}%)" for m in top],
                 padding=3, fontsize=9)
    ax.set_xlabel("disputes")
    ax.legend(ncols=2, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return None


def _options(ax: Axes, r: dict) -> None:
    rows: list[tuple[str, int, int, str]] = []
    for stage, s in r["options"].items():
        for action, a in s["actions"].items():
            if not a["uses"]:
                rows.append((f"{stage} {action}", 0, 1, "action never used"))
                continue
            for name, spec in a["params"].items():
                total = len(spec["counts"])
                never = spec["never"]
                rows.append((f"{stage} {action}.{name}", total - len(never), len(never), ", ".join(never)))
    if not any(chosen for _, chosen, _, _ in rows):
        return _empty(ax, "no agent decision in this window")
    rows.reverse()
    y = list(range(len(rows)))
    ax.barh(y, [c for _, c, _, _ in rows], color=GOOD, label="codes chosen", height=0.7)
    ax.barh(y, [n for _, _, n, _ in rows], left=[c for _, c, _, _ in rows], color=BAD, label="never chosen",
            height=0.7)
    for i, (_, chosen, never, names) in enumerate(rows):
        if names:
            ax.text(chosen + never + 0.2, i, names if len(names) < 48 else names[:45] + "...", va="center",
                    fontsize=7, color="#555555")
    ax.set_yticks(y, [label for label, _, _, _ in rows], fontsize=8)
    ax.set_xlabel("configured codes")
    ax.set_xlim(0, max(c + n for _, c, n, _ in rows) * 2.2)
    ax.legend(frameon=False, loc="lower right")
    return None


def _negotiation(ax: Axes, r: dict) -> None:
    by_option = r["negotiation"]["by_option"]
    if not by_option:
        return _empty(ax, "no ticket started in negotiation")
    options = list(by_option)[::-1]
    y = _at(ax, options, "y")
    left = [0] * len(options)
    for outcome, colour in OUTCOME_COLOURS.items():
        widths = [by_option[o][outcome] for o in options]
        bars = ax.barh(y, widths, left=left, color=colour, label=outcome.replace("_", " "), height=0.7)
        ax.bar_label(bars, labels=[str(w) if w else "" for w in widths], label_type="center", fontsize=9)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("tickets, by the merchant's answer")
    ax.legend(ncols=4, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return None


def _agents(ax: Axes, r: dict) -> None:
    by_stage = r["agents"]["by_stage"]
    if not any(s["decisions"] for s in by_stage.values()):
        return _empty(ax, "no agent decision in this window")
    stages = list(by_stage)
    bars = ax.bar(_at(ax, stages, "x"), [by_stage[s]["decisions"] for s in stages], color="#4c72b0", width=0.6)
    labels = []
    for s in stages:
        figures = by_stage[s]
        sat = "-" if figures["satisfaction"] is None else f"{figures['satisfaction']:.1f}/5"
        flags = "-" if figures["flag_rate"] is None else f"{100 * figures['flag_rate']:.0f}%"
        labels.append(f"{figures['agents']} agents\nQC flags {flags}\nsatisfaction {sat}")
    ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_ylim(0, max(b.get_height() for b in bars) * 1.45)
    ax.set_ylabel("decisions")
    return None


def _money(ax: Axes, r: dict) -> None:
    rows = [(f"{kind.replace('_', ' ')}", currency, amount) for kind, by_currency in r["money"].items()
            for currency, amount in by_currency.items()]
    if not rows:
        return _empty(ax, "no money moved in this window")
    labels = [f"{kind} ({currency})" if len({c for _, c, _ in rows}) > 1 else kind for kind, currency, _ in rows]
    bars = ax.bar(_at(ax, labels, "x"), [_major(amount, currency) for _, currency, amount in rows], color="#8172b2",
                  width=0.6)
    ax.bar_label(bars, labels=[money_label(amount, currency)["en"] for _, currency, amount in rows], padding=3,
                 fontsize=9)
    ax.set_ylabel(f"amount ({', '.join(sorted({c for _, c, _ in rows}))})")
    ax.set_ylim(0, max(_major(amount, currency) for _, currency, amount in rows) * 1.2 or 1)
    return None


def _major(amount: int, currency: str) -> float:
    """Minor units as a number of major units, as `money_label` writes them (fen -> yuan)."""
    return float(money_label(amount, currency)["en"].split()[0].replace(",", ""))


CHARTS: dict[str, Chart] = {chart.key: chart for chart in (
    Chart("trend", "Dispute types per day", _trend),
    Chart("liability", "Liability per category", _liability),
    Chart("merchants", "Top merchants by merchant-liable disputes", _merchants),
    Chart("rounds", "Evidence rounds: category x dispute type", _rounds),
    Chart("latency", "Time in each state", _latency),
    Chart("sla", "SLA compliance", _sla),
    Chart("negotiation", "Negotiation outcomes", _negotiation),
    Chart("options", "Option boxes: codes chosen and never chosen", _options),
    Chart("agents", "Agents: decisions, QC flags, satisfaction", _agents),
    Chart("money", "Money moved by kind", _money),
)}
