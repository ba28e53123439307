"""The demo's own tables: what the simulated world did against what the system recorded, the run's
counts explained, and the money — printed with (and in the words of) the report of `tools.report`.

One table per question: the demo's negotiation table replaces the report's
(it adds the answers dealt to the simulated merchants), and its money table
(every ledger movement, counted) is the only one — the report's and the
month's movements of ``disputes ledger`` would say the same again.
"""
from __future__ import annotations

import re

from tools.report.tables import LEDGER_KINDS, Table
from tools.simulation.result import DemoResult
from tools.simulation.world import ANSWERS

#: One row per path beyond the straight line: what happened, the counters of the simulated world
#: (`DemoResult.world`, or ``agents:`` + a key of `DemoResult.agents`) and of the system
#: (`DemoResult.paths`) that count it.
PATH_ROWS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("merchant did not answer the complaint", ("merchant stayed silent",), ("merchant response deadlines missed",)),
    ("buyer accepted the merchant's settlement", ("buyer accepted the settlement",), ("settlements accepted",)),
    ("buyer declined it", ("buyer declined the settlement",), ("buyer declined the settlement",)),
    ("merchant refunded in the interception countdown", ("merchant approved the refund during the countdown",),
     ("refunds approved in the countdown",)),
    ("logistics intercepted the parcel", ("logistics: interception succeeded",), ("interceptions succeeded",)),
    ("logistics could not intercept it", ("logistics: interception failed",), ("interception failed",)),
    ("logistics never answered", ("logistics: no answer",), ()),
    ("buyer withdrew the complaint", ("buyer withdrew",), ("withdrawals",)),
    ("agent could not judge (back to stage 2)", ("agents:stage3 cannot_judge",), ("cannot judge",)),
    ("buyer returned the goods", ("buyer returned the goods",), ("goods returned",)),
    ("merchant sent a payment voucher", ("merchant sent a voucher", "merchant sent a voucher for the wrong amount"),
     ("vouchers uploaded",)),
    ("  for the wrong amount (stage 4 rejects it)", ("merchant sent a voucher for the wrong amount",),
     ("vouchers rejected",)),
    ("payment deadline passed: no voucher, or goods kept", ("merchant never sent a voucher", "buyer kept the goods"),
     ("payment deadlines missed",)),
    ("supervisor approved a complaint fee", ("agents:supervisor approve_payment complaint_fee",),
     ("complaint fee approvals approved",)),
    ("supervisor declined a complaint fee", ("agents:supervisor decline_payment complaint_fee",),
     ("complaint fee approvals declined",)),
    ("supervisor approved a platform advance", ("agents:supervisor approve_payment platform_advance",),
     ("platform advance approvals approved",)),
    ("supervisor declined a platform advance", ("agents:supervisor decline_payment platform_advance",),
     ("platform advance approvals declined",)),
    ("payment still awaiting a supervisor", (), ("complaint fee approvals pending", "platform advance approvals pending")),
    ("buyer or merchant appealed the judgment", ("buyer appealed", "merchant appealed"), ("appeals admitted",)),
    ("buyer answered the survey", ("buyer answered the survey",), ("survey answers",)),
    ("payments reported income after an advance", ("payments reported a merchant's new income",),
     ("debts settled",)),
)


def negotiation_table(result: DemoResult) -> Table:
    """The report's negotiation table with the answers dealt to the simulated merchants beside
    what the system recorded (same key, title and words: it takes the report's place)."""
    negotiated = sum(row.get("tickets", 0) for row in result.by_option.values())
    straight = ((result.report.get("negotiation") or {}).get("straight_to_floor", 0))
    any_open = any(row.get("open") for row in result.by_option.values())
    columns = ("merchant's answer", "dealt", "tickets", "settled", "to agents", "withdrawn") + (
        ("open",) if any_open else ())
    table = Table("negotiation", f"Negotiation: {negotiated} tickets negotiated, {straight} went straight to the "
                  "agents", columns,
                  caption="dealt: the answers the simulation gave its merchants (--merchant-shares); tickets: the "
                          "answers the system received in time (a late one counts as silent); settled: resolved "
                          "without an agent (dimmed: how)")
    totals = [0] * 6
    for answer in ANSWERS:
        row = result.by_option.get(answer) or {}
        n, settled = row.get("tickets", 0), row.get("resolved_without_agent", 0)
        figures = (result.planned.get(answer, 0), n, settled, row.get("to_floor", 0), row.get("withdrawn", 0),
                   row.get("open", 0))
        table.add(answer, f"{figures[0]} ({result.shares.get(answer, 0):.0%})", n,
                  f"{settled} ({settled / n:.0%})" if n else "0", *figures[3:len(columns) - 1])
        for how, count in sorted((row.get("resolved_by") or {}).items(), key=lambda kv: -kv[1]):
            table.add(f"  {how}", "", "", count, *[""] * (len(columns) - 4), muted=True)
        totals = [t + v for t, v in zip(totals, figures)]
    table.add("all", *totals[:len(columns) - 1])
    return table


def money_table(result: DemoResult) -> Table:
    """Every movement of the ledger, by kind: how many, how much, and what it is."""
    table = Table("money", "Money moved", ("kind", "movements", "amount", "what it is"),
                  caption="every transaction of the ledger, each one balanced (CNY)")
    for kind, row in sorted(result.money.items()):
        table.add(kind, row["count"], f"{row['amount'] / 100:,.2f}", LEDGER_KINDS.get(kind, ""))
    return table


def merchants_table(books: dict) -> Table:
    """Each merchant's funds and debt, as ``disputes ledger`` lists them."""
    currencies = sorted({currency for _, currency in books["merchants"]})
    table = Table("merchants_books", f"Merchants' funds and debt ({', '.join(currencies) or 'CNY'})",
                  ("merchant", "funds", "debt"),
                  caption="funds: what the platform holds for the merchant (refunds are taken from it); "
                          "debt: refunds the platform advanced and has not recovered yet")
    for (merchant, _currency), row in sorted(books["merchants"].items()):
        table.add(merchant, _money(row["funds"]), _money(row["debt"]))
    return table


def paths_table(result: DemoResult) -> Table:
    """The paths beyond the straight line, one a row: what the simulation did, what the system recorded."""
    table = Table("paths", "Beyond the straight line: the simulation against the system",
                  ("what happened", "simulated", "recorded"),
                  caption="simulated: what the simulated parties, agents and supervisor did; recorded: what the "
                          "system's audit trail, approvals and ledger show. They differ where an answer came "
                          "after its deadline (refused: the deadline's path ran instead)")
    used_world: set[str] = set()
    used_paths: set[str] = set()
    for label, world_keys, path_keys in PATH_ROWS:
        did = sum(_world(result, k) for k in world_keys)
        recorded = sum(result.paths.get(k, 0) for k in path_keys)
        used_world.update(world_keys)
        used_paths.update(path_keys)
        if did or recorded:
            table.add(label, did if world_keys else "-", recorded if path_keys else "-")
    # Anything counted that no row names is shown rather than lost.
    for key, n in sorted(result.world.items()):
        if n and key not in used_world:
            table.add(key, n, "-")
    for key, n in result.paths.items():
        if n and key not in used_paths:
            table.add(key, "-", n)
    return table


def run_table(result: DemoResult) -> Table:
    """The run itself: its outcome, every complaint accounted for, the wire in and out, the desk."""
    table = Table("run", "Demo run", ("what", "how it went"))
    status = "every ticket final" if result.all_terminal else "some tickets still open"
    table.add("outcome", f"{status}{' (timed out)' if result.timed_out else ''} in {result.elapsed:.1f} s")
    table.add("complaints", complaints_line(result))
    table.add("other messages", other_messages_line(result))
    received = sum(result.events_received.values())
    published = (result.report.get("events") or {}).get("published", received)
    table.add("events", f"{received} received by the simulated downstream consumer of op.events (of {published} "
                        f"published); {result.out_of_order} out of order, {result.repeated} repeated")
    table.add("agents' desk", desk_line(result.agents))
    table.add("warnings logged", _counts(result.logged) or "none")
    table.add("ledger", "every invariant holds" if result.books_ok else f"{len(result.problems)} invariant(s) violated")
    return table


def complaints_line(result: DemoResult) -> str:
    """``204 sent = 200 new tickets + 1 joined an open ticket + 3 repeats ignored + 0 refused``,
    with what each part is; a part the others do not explain is named."""
    key = "complaint.submitted"
    sent = result.published.get(key, 0)
    distinct = result.distinct.get(key, sent)
    repeats = sent - distinct
    intake = result.report.get("intake") or {}
    linked = int(intake.get("linked_complaints", 0))
    refused = int((intake.get("rejected") or {}).get(key, 0))
    text = (f"{sent} sent to op.intake = {result.admitted} new tickets + {linked} joined an open ticket (the same "
            f"order from the other channel) + {repeats} repeats of a complaint already sent (an upstream retry: "
            f"ignored) + {refused} refused (invalid or too late)")
    missing = distinct - result.admitted - linked - refused
    if missing:
        text += f"; {missing} not accounted for"
    return text


def other_messages_line(result: DemoResult) -> str:
    """What the simulated parties sent besides the complaints, and what the intake refused."""
    others = {k: n for k, n in result.published.items() if k != "complaint.submitted"}
    refused = {k: n for k, n in ((result.report.get("intake") or {}).get("rejected") or {}).items()
               if k != "complaint.submitted"}
    text = (f"{sum(others.values())} from merchants, buyers, logistics and payments ({_counts(others)}); "
            f"refused: {_counts(refused) or 'none'}")
    return text


def desk_line(stats: dict[str, int]) -> str:
    """The agents' clicks at the HTTP desk: claims, decisions, and every answer other than "done"."""
    claims = sum(n for k, n in stats.items() if k.startswith("stage") and k.endswith(" claims"))
    decisions = sum(n for k, n in stats.items()
                    if k.startswith("stage") and not k.endswith((" claims", "waited for a supervisor")))
    supervisor = sum(n for k, n in stats.items() if k.startswith("supervisor ") and " answered " not in k)
    waited = sum(n for k, n in stats.items() if k.endswith("waited for a supervisor"))
    parts = [f"{claims} tickets claimed (in stage 1 a claim is the take-over), {decisions} decisions applied"]
    if waited or supervisor:
        parts.append(f"the supervisor decided {supervisor} payments awaiting approval (an agent waited for "
                     f"{waited} of them; the scheduler asks for platform advances)")
    refusals = {"complaint fee over the month's budget (422)": "complaint fees over the month's budget (HTTP 422, "
                                                               "as the demo's small budget intends)",
                "refused by the worker": "refused by the stage worker (the ticket had moved on)"}
    for key, words in refusals.items():
        if stats.get(key):
            parts.append(f"{stats[key]} {words}")
    for key, n in sorted(stats.items()):
        answered = re.fullmatch(r"(?:(.+) )?answered (\d+)", key)
        if answered is None:
            continue
        who = {None: "decisions", "claim": "claims"}.get(answered.group(1)) or answered.group(1)
        status = answered.group(2)
        parts.append(f"{n} {who} accepted (HTTP 202) but refused by the stage worker" if status == "202"
                     else f"{n} {who} answered HTTP {status}")
    return "; ".join(parts)


def summary_tables(result: DemoResult) -> list[Table]:
    """The demo's tables printed after the report (its negotiation table goes into the report)."""
    return [paths_table(result), run_table(result)]


def _world(result: DemoResult, key: str) -> int:
    if key.startswith("agents:"):
        return result.agents.get(key.removeprefix("agents:"), 0)
    return result.world.get(key, 0)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items()))


def _money(minor: int) -> str:
    return f"{minor / 100:,.2f}"
