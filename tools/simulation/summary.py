"""The demo's own summary tables, printed after the report of `tools.report`."""
from __future__ import annotations

from rich.table import Table

from tools.simulation.result import DemoResult
from tools.simulation.world import ANSWERS


def summary_tables(result: DemoResult) -> list[Table]:
    return [options_table(result), money_table(result), paths_table(result), run_table(result)]


def options_table(result: DemoResult) -> Table:
    """Per merchant answer: how many tickets the negotiation settled without an agent, and how."""
    table = Table("merchant answer", "dealt (share)", "tickets", "resolved without an agent", "to the floor",
                  "with- drawn", title="Negotiation by merchant answer", title_justify="left", title_style="bold")
    table.columns[0].no_wrap = True
    for column in table.columns[1:]:
        column.justify = "right"
    totals = [0, 0, 0, 0, 0]
    for answer in ANSWERS:
        row = result.by_option.get(answer) or {}
        n, resolved = row.get("tickets", 0), row.get("resolved_without_agent", 0)
        figures = (result.planned.get(answer, 0), n, resolved, row.get("to_floor", 0), row.get("withdrawn", 0))
        table.add_row(answer, f"{figures[0]} ({result.shares.get(answer, 0):.0%})", str(n),
                      f"{resolved} ({resolved / n:.0%})" if n else "0", str(figures[3]), str(figures[4]))
        for how, count in sorted((row.get("resolved_by") or {}).items(), key=lambda kv: -kv[1]):
            table.add_row(f"  [dim]{how}[/dim]", "", "", f"[dim]{count}[/dim]", "", "")
        totals = [t + v for t, v in zip(totals, figures)]
    table.add_row("all", *(str(v) for v in totals), style="bold")
    table.caption = ("dealt: answers given to the simulated merchants; tickets: as the system recorded them "
                     "(a late answer counts as silent)")
    return table


def money_table(result: DemoResult) -> Table:
    table = Table("ledger kind", "movements", "amount", title="Money moved by kind (ledger)", title_justify="left",
                  title_style="bold")
    for kind, row in sorted(result.money.items()):
        table.add_row(kind, str(row["count"]), f"{row['amount'] / 100:,.2f} CNY")
    return table


def paths_table(result: DemoResult) -> Table:
    table = Table("what the system recorded", "n", "what the world did", "n", title="Paths taken",
                  title_justify="left", title_style="bold")
    left = [(k, v) for k, v in result.paths.items() if v]
    right = sorted(result.world.items())
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ("", "")
        b = right[i] if i < len(right) else ("", "")
        table.add_row(a[0], str(a[1]), b[0], str(b[1]))
    return table


def run_table(result: DemoResult) -> Table:
    """The demo's own checks: what was sent, what came out, how the agents fared."""
    table = Table(title="Demo run", title_justify="left", title_style="bold", show_header=False)
    table.add_column("what")
    table.add_column("value")
    status = "every ticket final" if result.all_terminal else "[red]some tickets still open[/red]"
    table.add_row("outcome", f"{status}{' (timed out)' if result.timed_out else ''} in {result.elapsed:.1f} s")
    table.add_row("tickets admitted", f"{result.admitted} of {result.tickets} complaints")
    table.add_row("published to op.intake", _counts(result.published))
    received = sum(result.events_received.values())
    table.add_row("received from op.events", f"{received} events; {result.out_of_order} out of order, "
                                             f"{result.repeated} repeated")
    intake = result.report.get("intake") or {}
    table.add_row("intake", f"{intake.get('linked_complaints', 0)} linked complaints; rejected (arrived too late "
                            f"or invalid): {_counts(intake.get('rejected') or {}) or 'none'}")
    table.add_row("agent decisions", _counts(result.agents))
    table.add_row("warnings logged", _counts(result.logged) or "none")
    table.add_row("ledger", "every invariant holds" if result.books_ok
                  else f"[red]{len(result.problems)} invariant(s) violated[/red]")
    return table


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items()))
