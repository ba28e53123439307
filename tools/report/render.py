"""Printing and writing a report: rich tables or JSON on a console; JSON, PNG or HTML files.

matplotlib is imported only for ``png`` and ``html``, so the table and JSON
forms stay quick to start.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table as RichTable
from rich.text import Text

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
    render_tables(report_tables(report), console)


def render_tables(tables: Mapping[str, Table], console: Console) -> None:
    """Print report tables in reading order, two side by side where both fit the width (`PAIRS`),
    else one under the other with its caption as text across the width. A caller may leave tables
    out or put its own in (``disputes demo`` does): a key `PAIRS` does not name comes last."""
    known = {k for keys in PAIRS for k in keys}
    rows = [[k for k in keys if k in tables] for keys in PAIRS] + [[k] for k in tables if k not in known]
    for keys in rows:
        drawn = [rich_table(tables[k]) for k in keys]
        widths = [Measurement.get(console, console.options, t).maximum for t in drawn]
        fits = sum(widths) + 4 * (len(drawn) - 1) <= console.width
        short = all(len(tables[k].caption or "") <= CAPTION_LINES * w for k, w in zip(keys, widths))
        if len(drawn) > 1 and fits and short:
            console.print(Columns(drawn, padding=(0, 4)))
            continue
        for key in keys:
            print_table(tables[key], console)


def print_table(table: Table, console: Console) -> None:
    """One table alone: its caption printed under it as text as wide as the console (inside the
    table it would wrap to the table's width, a narrow column of words under a narrow table)."""
    console.print(rich_table(table, caption=False))
    if table.caption:
        console.print(Text(table.caption, style="dim"))


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


#: Two tables go side by side only if each caption, wrapped to its table's width, takes at most
#: this many lines (else the caption is printed across the console under a table alone).
CAPTION_LINES = 3
#: A cell that reads as a figure: a count, a share, an amount, a duration, a score ("-": none).
FIGURE = re.compile(r"^(-|[0-9][0-9,.]*( ?(%|s|CNY|[A-Z]{3}|/ 5.*|\(.*\)))?|[0-9]+m [0-9]+s|[0-9]+[hd] [0-9]+[hm])$")


def rich_table(table: Table, caption: bool = True) -> RichTable:
    """A report table for the terminal; its title never wraps (the table is at least as wide).
    Columns of figures are right-aligned, columns of words left-aligned; dimmed rows are details.
    Text is shown as it is (a ``[section]`` of the policy is no markup)."""
    drawn = RichTable(title=escape(table.title), title_justify="left", title_style="bold",
                      caption=escape(table.caption) if caption and table.caption else None,
                      caption_justify="left", caption_style="dim", min_width=len(table.title))
    for i, column in enumerate(table.columns):
        cells = [row.cells[i] for row in table.rows if row.cells[i]]
        figures = i > 0 and bool(cells) and all(FIGURE.match(c) for c in cells)
        drawn.add_column(escape(column), justify="right" if figures else "left",
                         overflow="ellipsis" if figures else "fold")  # a long code is broken, not cut
    for row in table.rows:
        drawn.add_row(*(escape(c) for c in row.cells), style="dim" if row.muted else None)
    return drawn
