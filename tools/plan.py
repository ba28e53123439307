"""``disputes plan``: read the measurements, build the plan, show it as a table, JSON or a chart."""
from __future__ import annotations

import json
import math
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from planning.measure import STAGES
from planning.staffing import Plan
from tools.report.stats import duration_label


def render_table(plan: Plan, console: Console, zone: ZoneInfo) -> None:
    console.print(f"[bold]Agents needed per stage and hour[/] — model: Erlang C; target: claimed within "
                  f"{_duration(plan.target_wait_s)} for {plan.probability:.0%} of tickets; "
                  f"forecast: {plan.forecast}; times in {zone.key}")
    table = Table(show_lines=False, caption="each cell: agents needed (tickets arriving in the hour)")
    table.add_column("hour", no_wrap=True)
    for stage in STAGES:
        table.add_column(stage, justify="right", no_wrap=True)
    hours = sorted({r.hour for r in plan.rows})
    cells = {(r.stage, r.hour): r for r in plan.rows}
    for hour in hours:
        row = [hour.astimezone(zone).strftime("%m-%d %H:00")]
        for stage in STAGES:
            r = cells[(stage, hour)]
            row.append(f"{r.agents} ({r.arrivals:.1f})" if r.arrivals >= 0.05 else f"{r.agents} (<0.1)" if r.arrivals
                       else "-")  # a few tickets late from the hours before still need someone there
        table.add_row(*row)
    console.print(table)
    for stage in STAGES:
        busy = [r for r in plan.rows if r.stage == stage and r.arrivals]
        if busy:
            worst = min(busy, key=lambda r: r.within_target)
            line = (f"  {stage}: with that staffing, Erlang C gives at worst {worst.within_target:.0%} claimed within "
                    f"the target ({worst.hour.astimezone(zone):%H:00}), expected wait at most "
                    f"{_duration(max(r.expected_wait_s for r in busy))}")
            simulated = [r for r in busy if r.simulated_within is not None]
            if simulated:
                low = min(simulated, key=lambda r: r.simulated_within or 0.0)
                line += f"; the simulation {low.simulated_within:.0%} ({low.hour.astimezone(zone):%H:00})"
            console.print(line)
    if "simulation" in plan.inputs:
        console.print(f"  The table shows Erlang C's staffing, a formula per hour that can be checked by hand; the "
                      f"simulation checks it with the measured handling times and the backlog carried between "
                      f"hours ({plan.inputs['simulation']}). Where the simulation falls short of "
                      f"{plan.probability:.0%}, add an agent in the hours before.")
    stages = plan.inputs["stages"]
    console.print("[bold]What the plan rests on[/] "
                  f"({plan.inputs['window']['complaints']} complaints since {plan.inputs['window']['since'][:10]}):")
    for stage in STAGES:
        s = stages[stage]
        delay = (f", {_duration(s['delay_mean_s'])} after their complaint on average ({_duration(s['delay_p90_s'])} "
                 f"p90)" if s.get("delay_samples") else "")
        outside = s.get("arrivals_outside_forecast_hours") or 0
        outside_text = f", {outside:g} of them outside the forecast's hours (not planned)" if outside >= 0.05 else ""
        console.print(f"  {stage}: {s['visits_per_complaint']:.2f} arrivals per complaint{delay}{outside_text}; "
                      f"handling {_duration(s['handling_mean_s'])} mean, {_duration(s['handling_p90_s'])} p90 over "
                      f"{s['handling_samples']} tickets; {s['agents']} agents on the roster ({s['present']} present "
                      f"now), {s['capacity']:g} tickets each at once; peak need {plan.peak(stage)}")
    console.print(f"  {plan.inputs['assumptions']}.")


def write_png(plan: Plan, path: Path, zone: ZoneInfo) -> Path:
    """Staffing curves per stage against the arrival curve: what a supervisor reads at a glance."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    hours = sorted({r.hour for r in plan.rows})
    labels = [h.astimezone(zone).strftime("%H") for h in hours]
    xs = list(range(len(hours)))
    fig, axes = plt.subplots(len(STAGES), 1, figsize=(10, 2.4 * len(STAGES)), sharex=True)
    for ax, stage in zip(axes, STAGES):
        rows = {r.hour: r for r in plan.rows if r.stage == stage}
        ax.bar(xs, [rows[h].arrivals for h in hours], color="#c8d7ea", label="arrivals per hour")
        ax.set_ylabel("arrivals")
        twin = ax.twinx()
        twin.step(xs, [rows[h].agents for h in hours], where="mid", color="#c0392b", linewidth=2,
                  label="agents needed")
        twin.set_ylabel("agents")
        twin.set_ylim(bottom=0)
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{stage}: agents needed (red) against arrivals (bars); peak {plan.peak(stage)}", loc="left",
                     fontsize=10)
    axes[-1].set_xticks(xs, labels)
    axes[-1].set_xlabel(f"hour ({zone.key})")
    fig.suptitle(f"Plan: claimed within {_duration(plan.target_wait_s)} for {plan.probability:.0%} of tickets "
                 f"(Erlang C)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_json(plan: Plan) -> str:
    return json.dumps(plan.as_json(), ensure_ascii=False, indent=2)


def _duration(seconds: float) -> str:
    return duration_label(seconds) if math.isfinite(seconds) else "∞"  # an unstable queue waits forever
