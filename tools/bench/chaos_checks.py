"""What the chaos soak checks after each run, and what it prints.

Per run: every complaint admitted and every ticket in a final state; the audit trail of each
ticket contiguous (versions 1..n, n = the ticket's version) with no cause (message id,
dispatch) applied twice; every dispatch done, none dead; every outbox row published and
delivered on ``op.events``, each ticket's events arriving in commit (outbox id) order —
SPEC §5 and the relay promise at-least-once with an ``event_id`` (and an idempotency key on
money) to de-duplicate on, so repeated deliveries of one event are counted, not failed; and the
books' own invariants (``disputes ledger`` exits 0).

Across the two runs of one seed: the same ledger (per ticket reference, kind, amount and the
accounts each transaction moved), the same final state and the same lifecycle (the sequence of
state changes) for every ticket, and the same messages refused by the intake.
"""
from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from models.base import database
from tools.bench.chaos_network import HEAL_BOUND, PROBE_DEADLINE, probes_ok
from tools.bench.chaos_run import RunResult
from tools.bench.core import DISPUTES, pg_connect

TERMINAL = ("closed", "resolved", "withdrawn")


class Watch:
    """This process's own view of the database while a run goes on; survives PostgreSQL restarts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = None

    def _query(self, sql: str, args: tuple = ()) -> list[tuple] | None:
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = pg_connect(self.url)
                with self.conn.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchall()
            except Exception:  # noqa: BLE001 - the server restarts under us: reconnect next time
                self.close()
        return None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
        self.conn = None

    def healthy(self, api: str) -> bool:
        import requests
        try:
            return requests.get(f"{api}/health", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def moved_on(self, before) -> bool:
        """Nothing committed before `before` (naive UTC) still waits: every dispatch applied, every
        event published, every timer due by then fired or cancelled."""
        rows = self._query(
            "SELECT (SELECT count(*) FROM dispatch WHERE done_at IS NULL AND created_at < %s)"
            " + (SELECT count(*) FROM outbox_event WHERE published_at IS NULL AND created_at < %s)"
            " + (SELECT count(*) FROM timer WHERE status = 'pending' AND due_at < %s)", (before, before, before))
        return bool(rows) and int(rows[0][0]) == 0

    def processed(self, routing_key: str) -> int:
        rows = self._query("SELECT count(*) FROM processed_message WHERE routing_key = %s", (routing_key,))
        return int(rows[0][0]) if rows else 0

    def audit_count(self) -> int | None:
        rows = self._query("SELECT count(*) FROM ticket_event")
        return int(rows[0][0]) if rows else None

    def states(self) -> dict[str, int]:
        rows = self._query("SELECT state, count(*) FROM ticket GROUP BY state")
        return {state: int(n) for state, n in rows or []}

    def stuck(self) -> str:
        """A few unfinished tickets with their last change (for the progress lines)."""
        rows = self._query(
            "SELECT t.external_ref, t.state, t.assignee, t.version, e.action, e.actor,"
            " (SELECT count(*) FROM dispatch d WHERE d.ticket_id = t.id AND d.done_at IS NULL),"
            " (SELECT string_agg(a.kind || ':' || coalesce(a.decision, 'pending'), ',') FROM approval a WHERE a.ticket_id = t.id)"
            " FROM ticket t JOIN ticket_event e ON e.ticket_id = t.id AND e.version = t.version"
            " WHERE t.state NOT IN %s ORDER BY t.state_entered_at LIMIT 4", (TERMINAL,))
        return "; ".join(" ".join(str(v) for v in row) for row in rows or [])

    def _counts(self) -> tuple | None:
        """(tickets, final, events unpublished, events, dispatches not done, party messages answered),
        or None while the database does not answer."""
        rows = self._query(
            "SELECT (SELECT count(*) FROM ticket), (SELECT count(*) FROM ticket WHERE state IN %s),"
            " (SELECT count(*) FROM outbox_event WHERE published_at IS NULL), (SELECT count(*) FROM outbox_event),"
            " (SELECT count(*) FROM dispatch WHERE done_at IS NULL),"
            " (SELECT count(*) FROM processed_message WHERE message_id LIKE 'chaos:%%')"
            " + (SELECT count(DISTINCT message_id) FROM rejected_message WHERE message_id LIKE 'chaos:%%')",
            (TERMINAL,))
        return tuple(rows[0]) if rows else None

    def waiting_for(self, tickets: int, mailbox, tap, floor) -> str:
        if not mailbox.idle:
            return "mailbox"
        if not floor.approvals.empty():
            return "approvals"
        counts = self._counts()
        if counts is None:
            return "database"
        total, final, unpublished, outbox, undone, answered = counts
        return (f"tickets {total}/{tickets}, final {final}, unpublished {unpublished}, delivered "
                f"{len(tap.seen)}/{outbox}, dispatches not done {undone}, answered {answered}/"
                f"{len(mailbox.message_ids)}")

    def settled(self, tickets: int, mailbox, tap, floor) -> bool:
        """Every ticket final, nothing left to do anywhere: no message unpublished, unread or
        unapplied, no event undelivered, no approval waiting."""
        if not mailbox.idle or not floor.approvals.empty():
            return False
        counts = self._counts()
        if counts is None:
            return False
        total, final, unpublished, outbox, undone, answered = counts
        return (total == tickets and final == tickets and unpublished == 0 and undone == 0
                and len(tap.seen) >= outbox and answered >= len(mailbox.message_ids))


#: A warning repeated more often than this within one minute of one process's log is logged "on every
#: beat" (the scheduler's beat is 0.2 s, a worker's retry a few seconds): an outage must be logged once
#: when it starts and once when it ends, with a count, and at most as a reminder now and then.
CHATTY_PER_MINUTE = 12
_VARIABLE = re.compile(r"0x[0-9a-f]+|[0-9a-f]{8,}|\d+(\.\d+)?")


def read_logs(folder: Path) -> dict[str, list[str]]:
    """Each child process's warnings and errors (log file name → lines ``<time to the ms> <level>
    <logger> <message>``), from its JSON lines and from dramatiq's own plain ones."""
    logs: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.log")):
        with contextlib.suppress(OSError):
            logs[path.stem] = [line for line in map(_warning, path.read_text(errors="replace").splitlines()) if line]
    return logs


_PLAIN = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] .*?\[([\w.()]+)\] \[(WARNING|ERROR|CRITICAL)\] (.*)$")


def _warning(line: str) -> str | None:
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            return f"{str(entry.get('time', ''))[:23]} {entry['level']} {entry.get('logger')} {entry.get('message')}"
        return None
    plain = _PLAIN.match(line)
    return f"{plain[1]} {plain[3]} {plain[2]} {plain[4]}" if plain else None


def _said(text: str) -> str:
    """What a log line says, without what varies between its repeats: numbers and ids, and what follows
    an opening parenthesis (dramatiq's "Failed to process message stage4_handle(6083, …)" is one line
    repeated per message, whatever each message carried)."""
    return _VARIABLE.sub("#", text.split("(", 1)[0])[:160]


def chatty(logs: dict[str, list[str]]) -> list[str]:
    """Warnings a process repeated more than CHATTY_PER_MINUTE times within a minute."""
    found = []
    for name, lines in logs.items():
        per_minute: Counter[tuple[str, str]] = Counter()
        for line in lines:
            per_minute[(line[:16], _said(line[24:]))] += 1
        worst = per_minute.most_common(1)
        if worst and worst[0][1] > CHATTY_PER_MINUTE:
            (minute, text), n = worst[0]
            found.append(f"{name}: {n} × in the minute {minute}: {text.strip()[:120]}")
    return found


def api_fault_check(floor: dict[str, int]) -> Check:
    """A dependency down is 503 (retry shortly), never 500 (a fault of ours): the agents' clients and
    the load balancer treat them differently, and a 500 pages someone."""
    answered = {key.split()[-1]: n for key, n in floor.items()
                if key.startswith("http ") and key.split()[-1].isdigit()}  # not "http connection errors"
    errors = answered.get("500", 0)
    return ("the API answered 503, never 500, while a dependency was down", errors == 0,
            ", ".join(f"{status} × {n}" for status, n in sorted(answered.items())) or "no 5xx")


def network_checks(run: RunResult) -> list[Check]:
    """What the network soak adds: recovery within the bound after each heal, /health and /metrics
    answering in time while the API is cut off, and no outage logged on every beat."""
    checks: list[Check] = []
    network = [f for f in run.timeline if f.network]
    late = [f"{f.what} {f.target} at {f.at:.0f}s" for f in network
            if f.recovered_after is None or f.recovered_after > HEAL_BOUND]
    worst = max((f.recovered_after or 0.0 for f in network), default=0.0)
    checks.append((f"after each network fault heals, everything committed before it moves on within "
                   f"{HEAL_BOUND:.0f}s", not late,
                   _sample(late) or f"{len(network)} network faults; slowest {worst:.1f}s"))
    probed = [f for f in network if f.observed is not None]
    bad = [f"{f.what} at {f.at:.0f}s: {f.observed}" for f in probed if not probes_ok(f.observed or {})]
    checks.append((f"/health names the unreachable dependencies and /metrics answers, within "
                   f"{PROBE_DEADLINE:.0f}s, while the API is cut off", not bad and bool(probed),
                   _sample(bad, 2) or (f"{len(probed)} times" if probed else "the API was never cut off")))
    noisy = chatty(run.logs)
    checks.append(("an outage is logged once with a count, not on every beat", not noisy,
                   _sample(noisy, 3) or f"{sum(map(len, run.logs.values()))} warnings in {len(run.logs)} logs"))
    return checks


def close_connections() -> None:
    try:
        if database.obj is not None:
            database.obj.close_all()
    except Exception:  # noqa: BLE001
        pass


def run_ledger_check(env: dict[str, str]) -> tuple[int, str]:
    """``disputes ledger``: the books' own invariants (exit 1 when one fails)."""
    try:
        done = subprocess.run(DISPUTES + ["ledger"], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return 124, "disputes ledger timed out"
    return done.returncode, (done.stdout + done.stderr)[-3000:]


def read_tables(url: str) -> tuple[list[dict], list[dict], list[dict], list[dict], dict[str, int], list[dict]]:
    conn = pg_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, external_ref, state, version FROM ticket ORDER BY id")
            tickets = [dict(zip(("id", "ref", "state", "version"), r)) for r in cur.fetchall()]
            cur.execute("SELECT ticket_id, version, from_state, to_state, action, actor, cause FROM ticket_event "
                        "ORDER BY ticket_id, version")
            audit = [dict(zip(("ticket_id", "version", "from_state", "to_state", "action", "actor", "cause"), r))
                     for r in cur.fetchall()]
            cur.execute("SELECT id, ticket_id, routing_key, (body::json)->>'event_id', published_at IS NOT NULL "
                        "FROM outbox_event ORDER BY id")
            outbox = [dict(zip(("id", "ticket_id", "routing_key", "event_id", "published"), r))
                      for r in cur.fetchall()]
            cur.execute("SELECT x.id, x.idempotency_key, x.kind, t.external_ref, x.amount, x.currency, "
                        "array_agg(a.name || '=' || e.amount ORDER BY a.name, e.amount) "
                        "FROM ledger_transaction x LEFT JOIN ticket t ON t.id = x.ticket_id "
                        "JOIN ledger_entry e ON e.txn_id = x.id JOIN account a ON a.id = e.account_id "
                        "GROUP BY x.id, t.external_ref ORDER BY x.id")
            ledger = [dict(zip(("id", "key", "kind", "ref", "amount", "currency", "entries"), r))
                      for r in cur.fetchall()]
            cur.execute("SELECT count(*) FILTER (WHERE done_at IS NULL), count(*) FILTER (WHERE outcome LIKE 'dead%%'),"
                        " count(*) FILTER (WHERE attempts > 1), count(*) FILTER (WHERE outcome = 'applied'),"
                        " count(*) FILTER (WHERE outcome LIKE 'refused%%'), count(*) FROM dispatch")
            names = ("not done", "dead", "sent more than once", "applied", "refused", "total")
            dispatches = dict(zip(names, (int(v) for v in cur.fetchone())))
            cur.execute("SELECT routing_key, message_id, reasons FROM rejected_message ORDER BY id")
            rejected = [dict(zip(("routing_key", "message_id", "reasons"), r)) for r in cur.fetchall()]
    finally:
        conn.close()
    return tickets, audit, outbox, ledger, dispatches, rejected


# ---- invariants -------------------------------------------------------------------------------------

Check = tuple[str, bool, str]


def _sample(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(str(i) for i in items[:n]) + (f" … ({len(items)} in all)" if len(items) > n else "")


def run_checks(planned: int, run: RunResult) -> tuple[list[Check], dict[str, object]]:
    checks: list[Check] = []
    tickets = {t["id"]: t for t in run.tickets}
    checks.append(("every complaint admitted once", len(tickets) == planned,
                   f"{len(tickets)} tickets for {planned} complaints"))
    open_ = [f"{t['ref']}:{t['state']}" for t in run.tickets if t["state"] not in TERMINAL]
    checks.append(("every ticket in a final state", not open_, _sample(open_) or f"{len(tickets)} final"))
    versions: dict[int, list[int]] = defaultdict(list)
    causes: Counter[tuple[int, str]] = Counter()
    for row in run.audit:
        versions[row["ticket_id"]].append(row["version"])
        if row["cause"]:
            causes[(row["ticket_id"], row["cause"])] += 1
    gaps = [tickets[t]["ref"] for t, vs in versions.items()
            if vs != list(range(1, len(vs) + 1)) or (t in tickets and tickets[t]["version"] != len(vs))]
    checks.append(("audit trail contiguous (versions 1..n = ticket version)", not gaps,
                   _sample(gaps) or f"{len(run.audit)} transitions"))
    twice = [f"{tickets[t]['ref']}:{c}" for (t, c), n in causes.items() if n > 1]
    checks.append(("no cause (message, dispatch) applied twice", not twice,
                   _sample(twice) or f"{len(causes)} distinct causes"))
    d = run.dispatches
    checks.append(("every dispatch done, none dead", d["not done"] == 0 and d["dead"] == 0,
                   f"{d['total']} dispatches: {d['not done']} not done, {d['dead']} dead, "
                   f"{d['sent more than once']} sent more than once"))
    # events: every outbox row delivered, per ticket in outbox id order
    by_id = {row["event_id"]: row for row in run.outbox}
    first: dict[str, int] = {}
    for position, (_, body) in enumerate(run.deliveries):
        first.setdefault(body.get("event_id"), position)
    unpublished = [r["id"] for r in run.outbox if not r["published"]]
    missing = [eid for eid in by_id if eid not in first]
    unknown = [eid for eid in first if eid not in by_id]
    checks.append(("every committed event published and delivered on op.events",
                   not unpublished and not missing and not unknown,
                   f"{len(run.outbox)} events; {len(unpublished)} unpublished, {len(missing)} never delivered"
                   f"{' (' + _sample(missing) + ')' if missing else ''}, {len(unknown)} unknown"))
    disorder = []
    per_ticket: dict[int, list[dict]] = defaultdict(list)
    for row in run.outbox:
        if row["ticket_id"] is not None:
            per_ticket[row["ticket_id"]].append(row)
    for ticket_id, rows in per_ticket.items():
        arrived = sorted((r for r in rows if r["event_id"] in first), key=lambda r: first[r["event_id"]])
        if [r["id"] for r in arrived] != sorted(r["id"] for r in arrived):
            disorder.append(tickets.get(ticket_id, {}).get("ref", ticket_id))
    duplicates = len(run.deliveries) - len(first)
    checks.append(("each ticket's events delivered in commit order", not disorder,
                   _sample(disorder) or f"{len(per_ticket)} tickets; {duplicates} repeated deliveries "
                                        "(at-least-once: same event_id, de-duplicated by consumers)"))
    checks.append(("the books' invariants (disputes ledger)", run.ledger_check[0] == 0,
                   "exit 0" if run.ledger_check[0] == 0 else run.ledger_check[1][-600:]))
    if run.faults:
        checks.append(api_fault_check(run.floor))
    if run.network and run.faults:
        checks += network_checks(run)
    if run.error:
        checks.append(("the run finished", False, run.error))
    figures = {"tickets": len(tickets), "transitions": len(run.audit),
               "state changes": sum(1 for r in run.audit if r["from_state"] != r["to_state"]),
               "events committed": len(run.outbox), "events delivered": len(run.deliveries),
               "repeated deliveries": duplicates, "ledger transactions": len(run.ledger),
               "dispatches": d["total"], "dispatches sent more than once": d["sent more than once"],
               "intake refusals": len(run.rejected), "seconds": round(run.seconds, 1),
               "transitions/s": round(len(run.audit) / run.seconds, 1) if run.seconds else None,
               "final states": dict(Counter(t["state"] for t in run.tickets))}
    return checks, figures


def _ledger_key(row: dict) -> tuple:
    return (row["ref"], row["kind"], row["amount"], row["currency"], tuple(row["entries"]))


def _lifecycles(run: RunResult) -> dict[str, list[tuple]]:
    refs = {t["id"]: t["ref"] for t in run.tickets}
    out: dict[str, list[tuple]] = defaultdict(list)
    for row in run.audit:
        if row["from_state"] != row["to_state"]:
            out[refs[row["ticket_id"]]].append((row["from_state"], row["to_state"], row["action"]))
    return out


def compare(reference: RunResult, chaos: RunResult) -> list[Check]:
    checks: list[Check] = []
    a, b = Counter(map(_ledger_key, reference.ledger)), Counter(map(_ledger_key, chaos.ledger))
    only_ref, only_chaos = a - b, b - a
    money = lambda c: sum(k[2] * n for k, n in c.items())  # noqa: E731
    checks.append(("ledger identical to the fault-free run (ticket, kind, amount, accounts)",
                   not only_ref and not only_chaos,
                   f"{sum(a.values())} transactions, {money(a)} minor units" if not only_ref and not only_chaos else
                   f"only fault-free: {_sample(sorted(only_ref, key=str), 3)}; only under faults: "
                   f"{_sample(sorted(only_chaos, key=str), 3)}"))
    states_a = {t["ref"]: t["state"] for t in reference.tickets}
    states_b = {t["ref"]: t["state"] for t in chaos.tickets}
    differ = [f"{r}: {states_a.get(r)}→{states_b.get(r)}" for r in sorted(set(states_a) | set(states_b))
              if states_a.get(r) != states_b.get(r)]
    checks.append(("final state of every ticket identical", not differ, _sample(differ) or f"{len(states_a)} tickets"))
    la, lb = _lifecycles(reference), _lifecycles(chaos)
    paths = [r for r in sorted(set(la) | set(lb)) if la.get(r) != lb.get(r)]
    checks.append(("lifecycle (sequence of state changes) of every ticket identical", not paths,
                   _sample(f"{r}: {la.get(r)} vs {lb.get(r)}" for r in paths) if paths else
                   f"{sum(map(len, la.values()))} state changes"))
    ra = Counter((r["routing_key"], r["message_id"]) for r in reference.rejected)
    rb = Counter((r["routing_key"], r["message_id"]) for r in chaos.rejected)
    checks.append(("the same messages refused by the intake", set(ra) == set(rb),
                   f"{len(ra)} refused in both" if set(ra) == set(rb) else
                   f"only fault-free: {_sample(set(ra) - set(rb))}; only under faults: {_sample(set(rb) - set(ra))}"))
    return checks


# ---- the report ---------------------------------------------------------------------------------------

def report(plan, reference: RunResult, chaos: RunResult, console: Console, seconds: float) -> dict:
    ref_checks, ref_figures = run_checks(len(plan.complaints), reference)
    chaos_checks, chaos_figures = run_checks(len(plan.complaints), chaos)
    cross = compare(reference, chaos)
    console.print()
    console.print(f"[bold]Faults injected (run 2)[/bold]: {len(chaos.timeline)}")
    for fault in chaos.timeline:
        recovered = "not within the limit" if fault.recovered_after is None else f"{fault.recovered_after:.1f}s"
        after = "after the heal, moving on after" if fault.network else "serving again after"
        console.print(f"  {fault.at:7.1f}s  {fault.what:<24} {fault.target:<28} down {fault.down_for:4.1f}s  "
                      f"{after} {recovered}")
        if fault.observed:
            console.print("             while cut off: " + "; ".join(
                f"{path} {seen.get('status')} in {seen.get('seconds')}s"
                + (f" naming {', '.join(seen['down'])}" if seen.get("down") else "")
                for path, seen in fault.observed.items()))
    recoveries = [f.recovered_after for f in chaos.timeline if f.recovered_after is not None and not f.network]
    healed = [f.recovered_after for f in chaos.timeline if f.recovered_after is not None and f.network]
    kinds = Counter(f"{f.what} {f.target}" for f in chaos.timeline)
    table = Table(title=f"chaos soak, seed {plan.seed}: figures")
    table.add_column("figure")
    table.add_column("fault-free", justify="right")
    table.add_column("under faults", justify="right")
    for key in ref_figures:
        if key != "final states":
            table.add_row(key, str(ref_figures[key]), str(chaos_figures[key]))
    table.add_row("final states", _states(ref_figures), _states(chaos_figures))
    money = _money(reference.ledger)
    table.add_row("money by kind", _fmt_money(money), _fmt_money(_money(chaos.ledger)))
    table.add_row("faults", "0", str(len(chaos.timeline)))
    if recoveries:
        table.add_row("recovery (serving again) median / max", "", f"{statistics.median(recoveries):.1f}s / "
                                                                    f"{max(recoveries):.1f}s")
    if chaos.network:
        table.add_row("network faults", "0", str(sum(1 for f in chaos.timeline if f.network)))
        if healed:
            table.add_row(f"after a heal, all moved on: median / max (bound {HEAL_BOUND:.0f}s)", "",
                          f"{statistics.median(healed):.1f}s / {max(healed):.1f}s")
    console.print(table)
    console.print("agents (under faults): " + ", ".join(f"{k} {v}" for k, v in sorted(chaos.floor.items())))
    console.print("parties (under faults): " + ", ".join(f"{k} {v}" for k, v in sorted(chaos.parties.items())))
    checks = ([("fault-free: " + n, ok, d) for n, ok, d in ref_checks]
              + [("under faults: " + n, ok, d) for n, ok, d in chaos_checks] + cross)
    verdicts = Table(title="invariants")
    verdicts.add_column("check")
    verdicts.add_column("")
    verdicts.add_column("detail", overflow="fold")
    for name, ok, detail in checks:
        verdicts.add_row(name, "[green]pass[/green]" if ok else "[red]FAIL[/red]", detail)
    console.print(verdicts)
    ok = all(ok for _, ok, _ in checks)
    console.print(f"[bold]{'PASS' if ok else 'FAIL'}[/bold]: seed {plan.seed}, {len(plan.complaints)} tickets, "
                  f"{len(chaos.timeline)} faults ({', '.join(f'{n} × {k}' for k, n in sorted(kinds.items()))}), "
                  f"{seconds:.0f}s in all")
    return {"ok": ok, "seed": plan.seed, "tickets": len(plan.complaints), "seconds": round(seconds, 1),
            "checks": [{"check": n, "ok": o, "detail": d} for n, o, d in checks],
            "figures": {"fault_free": ref_figures, "under_faults": chaos_figures},
            "money": {"fault_free": money, "under_faults": _money(chaos.ledger)},
            "faults": [f.as_json() for f in chaos.timeline], "server_restarts": chaos.restarts,
            "recovery_s": {"process_faults": _spread(recoveries), "after_network_heal": _spread(healed),
                           "heal_bound": HEAL_BOUND if chaos.network else None},
            "agents": chaos.floor, "parties": chaos.parties}


def _spread(values: list[float]) -> dict[str, float] | None:
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)} if values else None


def _states(figures: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(figures["final states"].items()))  # type: ignore[union-attr]


def _money(ledger: list[dict]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for row in ledger:
        out[row["kind"]] += int(row["amount"])
    return dict(sorted(out.items()))


def _fmt_money(money: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in money.items())
