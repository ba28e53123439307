"""The agents: quality-check verdicts, throughput, flags and the buyers' satisfaction.

Throughput is an agent's decisions (every action but a claim) on the window's
tickets. A QC verdict is about the agent whose work it judged (``qc_about``).
A buyer's survey answer is credited to the agent whose decision closed the
ticket — the last one the buyer saw act.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

from tools.report.history import History, agent_id
from tools.report.stats import counted, mean, share
from models.agent import Agent
from models.audit import TicketEvent
from models.party import SurveyAnswer
from models.states import STAGES, State

#: Agent actions that are not a decision (taking a ticket from the pool).
NOT_DECISIONS = frozenset({"claim"})


def qc_verdicts(events: Iterable[TicketEvent]) -> dict[str, object]:
    verdicts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for e in events:
        if e.qc_verdict:
            verdicts[e.qc_verdict] += 1
            if e.qc_reason:
                reasons[e.qc_reason] += 1
    return {"ok": verdicts.get("ok", 0), "flag": verdicts.get("flag", 0), "reasons": counted(reasons)}


def agent_figures(h: History) -> dict[str, object]:
    """Per agent: decisions, tickets worked, QC verdicts received, survey answers and their mean
    score; per stage the same summed; and the satisfaction scores overall."""
    decisions: Counter[int] = Counter()
    tickets: dict[int, set[int]] = defaultdict(set)
    verdicts: dict[int, Counter[str]] = defaultdict(Counter)
    closers: dict[int, int] = {}
    for event in h.events():
        agent = agent_id(event)
        if event.qc_verdict and event.qc_about is not None:
            verdicts[event.qc_about][event.qc_verdict] += 1
        if agent is None:
            continue
        if event.action not in NOT_DECISIONS:
            decisions[agent] += 1
            tickets[agent].add(event.ticket_id)
        if event.to_state == State.CLOSED and event.from_state != State.CLOSED:
            closers[event.ticket_id] = agent
    answers = list(SurveyAnswer.select(SurveyAnswer.ticket_id, SurveyAnswer.score)
                   .where(SurveyAnswer.ticket_id.in_(h.ids)).tuples())
    scores: dict[int, list[int]] = defaultdict(list)
    for ticket_id, score in answers:
        if ticket_id in closers:
            scores[closers[ticket_id]].append(score)
    known = set(decisions) | set(verdicts) | set(scores)
    agents = {a.id: a for a in Agent.select().where(Agent.id.in_(list(known)))} if known else {}
    rows = []
    for a in sorted(known, key=lambda i: (-decisions[i], i)):
        agent = agents.get(a)
        ok, flag = verdicts[a].get("ok", 0), verdicts[a].get("flag", 0)
        rows.append({"agent_id": a, "name": agent.name if agent else None,
                     "stage": agent.stage_name if agent else None, "decisions": decisions[a],
                     "tickets": len(tickets[a]), "qc_ok": ok, "qc_flag": flag, "flag_rate": share(flag, ok + flag),
                     "surveys": len(scores[a]), "satisfaction": mean(scores[a])})
    by_stage = {}
    for stage in STAGES:
        mine = [r for r in rows if r["stage"] == stage]
        ok, flag = sum(r["qc_ok"] for r in mine), sum(r["qc_flag"] for r in mine)
        stage_scores = [s for r in mine for s in scores[r["agent_id"]]]
        by_stage[stage] = {"agents": len(mine), "decisions": sum(r["decisions"] for r in mine), "qc_ok": ok,
                           "qc_flag": flag, "flag_rate": share(flag, ok + flag), "surveys": len(stage_scores),
                           "satisfaction": mean(stage_scores)}
    all_scores = [score for _, score in answers]
    return {"agents": rows, "by_stage": by_stage,
            "satisfaction": {"answers": len(all_scores), "mean": mean(all_scores),
                             "distribution": {str(k): sum(1 for s in all_scores if s == k) for k in range(1, 6)}}}
