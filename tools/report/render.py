"""Printing and writing a report: rich tables or JSON on a console; JSON, PNG or HTML files.

matplotlib is imported only for ``png`` and ``html``, so the table and JSON
forms stay quick to start.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.columns import Columns
from rich.console import Console
from rich.table import Table as RichTable

from tools.report.charts import chart_pngs, overview_png
from tools.report.history import Report
from tools.report.html import render_html
from tools.report.tables import Table, report_tables

FORMATS: tuple[str, ...] = ("table", "json", "png", "html")
#: Where ``png`` and ``html`` write when no output is named.
DEFAULT_OUTPUT = {"png": "report.png", "html": "report.html"}
#: Tables printed side by side on a wide terminal.
PAIRS: tuple[tuple[str, ...], ...] = (
    ("states", "types"), ("latency", "stages"), ("sla", "negotiation"), ("rounds", "rounds_by_category"),
    ("rounds_by_type", "requested"), ("liability", "liability_by_category"), ("merchants", "qc"), ("options",),
    ("agent_stages", "money"), ("agents", "events"),
)


def report_json(report: Report) -> str:
    """The JSON form: keys in a fixed order, money in integer minor units, UTF-8 labels as they are."""
    return json.dumps(report, ensure_ascii=False, indent=2)


def render_report(report: Report, console: Console, format: str = "table") -> None:
    """Print the report as rich tables (``table``) or as JSON (``json``)."""
    if format == "json":
        console.out(report_json(report), highlight=False)
        return
    if format != "table":
        raise ValueError(f"unknown report format {format!r} (table or json on a console)")
    tables = report_tables(report)
    for keys in PAIRS:
        console.print(Columns([rich_table(tables[k]) for k in keys], padding=(0, 4)))


def write_report(report: Report, format: str, output: str | Path | None = None,
                 console: Console | None = None) -> list[Path]:
    """Write the report in `format` and return the files written. ``table`` and ``json`` print on
    `console` when no `output` is named. ``png`` writes every chart on one page; when `output` is
    a directory (existing, or written with a trailing slash) it writes one PNG per chart there."""
    if format not in FORMATS:
        raise ValueError(f"unknown report format {format!r} (one of {', '.join(FORMATS)})")
    if format in ("table", "json") and output is None:
        render_report(report, console or Console(), format)
        return []
    path = Path(output or DEFAULT_OUTPUT[format])
    if format == "table":
        with path.open("w", encoding="utf-8") as out:
            render_report(report, Console(file=out, width=160, color_system=None), "table")
        return [path]
    if format == "json":
        path.write_text(report_json(report) + "\n", encoding="utf-8")
        return [path]
    if format == "html":
        path.write_text(render_html(report), encoding="utf-8")
        return [path]
    if path.is_dir() or str(output).endswith(("/", "\\")):
        path.mkdir(parents=True, exist_ok=True)
        written = []
        for key, png in chart_pngs(report).items():
            written.append(path / f"report-{key}.png")
            written[-1].write_bytes(png)
        return written
    path.write_bytes(overview_png(report))
    return [path]


def rich_table(table: Table) -> RichTable:
    """A report table for the terminal; its title never wraps (the table is at least as wide)."""
    drawn = RichTable(title=table.title, title_justify="left", title_style="bold", caption=table.caption,
                      caption_justify="left", min_width=len(table.title))
    for i, column in enumerate(table.columns):
        drawn.add_column(column, justify="left" if i == 0 else "right")
    for row in table.rows:
        drawn.add_row(*row.cells, style="dim" if row.muted else None)
    return drawn
