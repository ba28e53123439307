"""The report as one self-contained HTML page: each chart (a PNG embedded as a data URI) next to
the tables behind it, no external file, script or style sheet — it can be mailed or archived."""
from __future__ import annotations

import base64
from html import escape

from tools.report.charts import CHARTS, chart_pngs
from tools.report.history import Report
from tools.report.tables import Table, report_tables

#: The page's sections: a heading, the charts, the tables (by key).
SECTIONS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Tickets and dispute types", ("trend",), ("states", "types")),
    ("Liability", ("liability", "merchants"), ("liability", "liability_by_category", "merchants")),
    ("Evidence rounds", ("rounds",), ("rounds", "rounds_by_category", "rounds_by_type", "requested")),
    ("Time and service levels", ("latency", "sla"), ("latency", "stages", "sla")),
    ("Negotiation", ("negotiation",), ("negotiation",)),
    ("Option boxes", ("options",), ("options",)),
    ("Agents", ("agents",), ("agent_stages", "agents", "qc")),
    ("Money and events", ("money",), ("money", "events")),
)

STYLE = """
body { font-family: -apple-system, "Segoe UI", "Noto Sans", "PingFang SC", sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .window { color: #666; margin-top: 0; }
section { border-top: 1px solid #ddd; padding-top: 1rem; margin-top: 1.5rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }
.charts img { max-width: 100%; margin: 0.5rem 0; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9rem; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.3rem; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.muted td { color: #888; } p.note { color: #666; font-size: 0.85rem; margin: 0.3rem 0 0; }
.kpis { display: flex; gap: 2rem; flex-wrap: wrap; } .kpi b { display: block; font-size: 1.6rem; }
"""


def render_html(report: Report) -> str:
    """The whole page as text."""
    r: dict = report  # type: ignore[assignment]
    pngs = chart_pngs(report)
    tables = report_tables(report)
    window = r["window"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>Disputes report</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>Disputes report</h1>",
             f'<p class="window">tickets created from {escape(str(window["since"] or "the beginning"))} '
             f'until {escape(str(window["until"] or "now"))}; generated '
             f'{escape(str(window["generated_at"])[:19].replace("T", " "))} UTC</p>',
             _kpis(r)]
    for heading, chart_keys, table_keys in SECTIONS:
        parts.append(f"<section><h2>{escape(heading)}</h2><div class=\"charts\">")
        for key in chart_keys:
            data = base64.b64encode(pngs[key]).decode("ascii")
            parts.append(f'<img alt="{escape(CHARTS[key].title)}" src="data:image/png;base64,{data}">')
        parts.append('</div><div class="tables">')
        parts.extend(html_table(tables[key]) for key in table_keys)
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    rows = []
    for row in table.rows:
        cells = "".join(f'<td class="{"n" if i else ""}">{escape(c)}</td>' for i, c in enumerate(row.cells))
        rows.append(f'<tr class="{"muted" if row.muted else ""}">{cells}</tr>')
    note = f'<p class="note">{escape(table.caption)}</p>' if table.caption else ""
    return (f"<div><table><caption>{escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{note}</div>")


def _kpis(r: dict) -> str:
    sla = r["sla"]["resolve"]["compliance"]
    share = r["liability"]["merchant_side_share"]
    rounds = r["evidence_rounds"]
    floor = rounds["tickets"]
    mean_rounds = (sum(int(k) * n for k, n in rounds["distribution"].items()) / floor) if floor else None
    figures = [("tickets", str(r["tickets"]["total"])), ("open", str(r["tickets"]["open"])),
               ("resolved on time", "-" if sla is None else f"{sla:.0%}"),
               ("merchant liable", "-" if share is None else f"{share:.0%}"),
               ("evidence rounds per floor ticket", "-" if mean_rounds is None else f"{mean_rounds:.2f}"),
               ("satisfaction", "-" if r["agents"]["satisfaction"]["mean"] is None
                else f"{r['agents']['satisfaction']['mean']:.2f} / 5")]
    return '<div class="kpis">' + "".join(f'<div class="kpi"><b>{escape(v)}</b>{escape(k)}</div>'
                                          for k, v in figures) + "</div>"
