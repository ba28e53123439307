"""What the floor decided: evidence rounds (and what was asked for), liability shares, and how
each stage's configured options are used — the figures that tune the front-end prompts and the
option boxes."""
from __future__ import annotations

from collections import Counter, defaultdict

from tools.report.history import History, is_agent
from tools.report.stats import counted, mean, share
from policy.options import STAGES

#: Liabilities that make the merchant pay (the rest: the customer side).
MERCHANT_SIDE = ("merchant", "both")
#: How many merchants the report lists by merchant-liable disputes.
TOP_MERCHANTS = 10


def evidence_rounds(h: History) -> dict[str, object]:
    """Rounds per ticket that reached the floor — the distribution, per product category, per
    dispute type and per both — and the evidence asked for, by category and dispute type: the
    material that, asked for up front, would have spared a round."""
    floor = [t for t in h.tickets if t.floor_at is not None]
    distribution = Counter(t.evidence_rounds for t in floor)
    per_category: dict[str, list[int]] = defaultdict(list)
    per_type: dict[str, list[int]] = defaultdict(list)
    per_both: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for t in floor:
        per_category[t.category].append(t.evidence_rounds)
        per_type[t.dispute_type].append(t.evidence_rounds)
        per_both[t.category][t.dispute_type].append(t.evidence_rounds)
    kinds_by_category: dict[str, Counter[str]] = defaultdict(Counter)
    kinds_by_type: dict[str, Counter[str]] = defaultdict(Counter)
    parties: Counter[str] = Counter()
    for event in h.events():
        if event.action != "request_evidence" or not is_agent(event):
            continue
        ticket = h.by_id[event.ticket_id]
        params = event.params or {}
        parties[str(params.get("from") or "?")] += 1
        for kind in params.get("items") or []:
            kinds_by_category[ticket.category][kind] += 1
            kinds_by_type[ticket.dispute_type][kind] += 1
    return {"tickets": len(floor),
            "distribution": {str(k): distribution[k] for k in sorted(distribution)},
            "by_category": _rounds(per_category),
            "by_dispute_type": _rounds(per_type),
            "by_category_and_type": {c: {k: mean(v) for k, v in sorted(types.items())}
                                     for c, types in sorted(per_both.items())},
            "requested": {"from": counted(parties),
                          "items_by_category": {c: counted(n) for c, n in sorted(kinds_by_category.items())},
                          "items_by_dispute_type": {k: counted(n) for k, n in sorted(kinds_by_type.items())}}}


def _rounds(groups: dict[str, list[int]]) -> dict[str, dict[str, object]]:
    return {key: {"tickets": len(v), "mean": mean(v) or 0.0} for key, v in sorted(groups.items())}


def liability_shares(h: History, top: int = TOP_MERCHANTS) -> dict[str, object]:
    """Liability of the judged tickets: overall, per category, and the merchants with the most
    merchant-liable (merchant or both) disputes."""
    judged = [t for t in h.tickets if t.liability]
    counts = Counter(t.liability for t in judged)
    per_category: dict[str, Counter[str]] = defaultdict(Counter)
    per_merchant: dict[str, Counter[str]] = defaultdict(Counter)
    for t in judged:
        per_category[t.category][t.liability] += 1
        per_merchant[t.merchant_id][t.liability] += 1
    merchant_side = sum(counts.get(k, 0) for k in MERCHANT_SIDE)
    ranked = sorted(per_merchant.items(), key=lambda kv: (-_merchant_side(kv[1]), -sum(kv[1].values()), kv[0]))
    return {"judged": len(judged), "counts": counted(counts),
            "shares": {k: share(v, len(judged)) for k, v in counted(counts).items()},
            "remedies": counted(Counter(t.remedy for t in judged)),
            "merchant_side_share": share(merchant_side, len(judged)),
            "by_category": {c: {"judged": sum(n.values()), "counts": counted(n),
                                "merchant_side_share": share(_merchant_side(n), sum(n.values()))}
                            for c, n in sorted(per_category.items())},
            "merchants": len(per_merchant),
            "top_merchants": [{"merchant_id": m, "judged": sum(n.values()), "merchant_liable": _merchant_side(n),
                               "share": share(_merchant_side(n), sum(n.values()))}
                              for m, n in ranked[:top] if _merchant_side(n)]}


def _merchant_side(counts: Counter[str]) -> int:
    return sum(counts.get(k, 0) for k in MERCHANT_SIDE)


def option_usage(h: History) -> dict[str, dict[str, object]]:
    """How often each configured option of each stage was chosen, from the agents' decisions in
    the audit trail, against the policy's option boxes: per action, per parameter, per code —
    with the codes never chosen and those chosen every time, so the boxes can be tuned. A free
    amount (a partial refund) has no choices to count."""
    used: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    picks: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for event in h.events():
        stage = event.from_state
        if stage not in used or not is_agent(event):
            continue
        options = h.policy.options[stage]
        if event.action not in options.actions:
            continue  # claims and take-overs are no option box
        used[stage][event.action] += 1
        params = event.params or {}
        for name, spec in options.actions[event.action].params.items():
            value = params.get(name)
            for code in (value if isinstance(value, list) else [value] if value is not None else []):
                picks[(stage, event.action, name)][str(code)] += 1
    result: dict[str, dict[str, object]] = {}
    for stage in STAGES:
        options = h.policy.options[stage]
        decisions = sum(used[stage].values())
        actions: dict[str, object] = {}
        never: list[str] = []
        always: list[str] = []
        for action, option in options.actions.items():
            uses = used[stage][action]
            if not uses:
                never.append(action)
            params: dict[str, object] = {}
            for name, spec in option.params.items():
                if spec.kind == "amount":
                    continue
                chosen = picks[(stage, action, name)]
                codes = [str(code) for code in spec.choices]
                counts = {code: chosen.get(code, 0) for code in codes}
                never_codes = [code for code in codes if uses and not counts[code]]
                always_codes = [code for code in codes if uses and counts[code] == uses]
                never += [f"{action}.{name}={code}" for code in never_codes]
                always += [f"{action}.{name}={code}" for code in always_codes if len(codes) > 1]
                params[name] = {"counts": counts, "never": never_codes, "always": always_codes}
            actions[action] = {"uses": uses, "share": share(uses, decisions), "params": params}
        result[stage] = {"decisions": decisions, "actions": actions, "never_chosen": never, "always_chosen": always}
    return result
