"""What an agent clicks: one of its stage's configured actions the ticket allows now.

Only codes from ``GET /options/{stage}`` are used, with a QC verdict on the
previous stage from stage 2 on. A judge never awards less than the buyer
already received (a settlement refund, an earlier judgment under appeal);
stage 4 rejects a voucher whose amount is not what the buyer is owed and
keeps complaint fees within what a supervisor declined and the budget left.
"""
from __future__ import annotations

import random
from decimal import Decimal

#: A stage-4 agent's complaint fees: 0 (none) often, the largest (above the approval threshold) sometimes.
FEE_WEIGHTS = {0: 35, 500: 20, 1000: 15, 2000: 10, 5000: 20}


def decide(stage: int, ticket: dict, options: dict, r: random.Random,
           hints: dict | None = None) -> tuple[str, dict, dict | None]:
    """An agent's click: one of the stage's configured actions the ticket allows now, with
    configured parameter choices, and a QC verdict on the previous stage (from stage 2 on)."""
    boxes = {a["action"]: a["params"] for a in options["actions"]}
    allowed = [a for a in ticket.get("allowed_actions") or [] if a in boxes]
    action, params = DECISIONS[stage](ticket, boxes, allowed, r, hints or {})
    reasons = [q["code"] for q in options.get("qc_reasons") or []]
    qc = None if stage == 1 else ({"verdict": "flag", "reason_code": r.choice(reasons)}
                                  if reasons and r.random() < 0.08 else {"verdict": "ok"})
    return action, params, qc


def _codes(boxes: dict, action: str, param: str) -> list:
    return [choice["code"] for choice in boxes[action][param]["choices"]]


def _evidence_request(boxes: dict, r: random.Random) -> dict:
    kinds = [k for k in _codes(boxes, "request_evidence", "items") if k != "voucher"]
    return {"from": r.choice(_codes(boxes, "request_evidence", "from")),
            "items": r.sample(kinds, k=min(len(kinds), r.randint(1, 2)))}


def _stage1(t: dict, boxes: dict, allowed: list[str], r: random.Random, hints: dict) -> tuple[str, dict]:
    action = "request_evidence" if "request_evidence" in allowed and r.random() < 0.7 else "to_judgment"
    statuses, categories = _codes(boxes, action, "dispute_status"), _codes(boxes, action, "category")
    status = {"negotiated_reject": "user_declined_settlement", "direct_refund": "user_declined_settlement",
              "platform_judgment": "not_reconciled"}.get(t.get("negotiation_option") or "")
    params = {"dispute_status": status if status in statuses else r.choice(statuses),
              "category": t["category"] if t["category"] in categories and r.random() < 0.9 else r.choice(categories)}
    if action == "request_evidence":
        params.update(_evidence_request(boxes, r))
    return action, params


def _stage2(t: dict, boxes: dict, allowed: list[str], r: random.Random, hints: dict) -> tuple[str, dict]:
    if "request_evidence" in allowed and r.random() < 0.25:
        return "request_evidence", _evidence_request(boxes, r)
    return "to_judgment", {}


def _stage3(t: dict, boxes: dict, allowed: list[str], r: random.Random, hints: dict) -> tuple[str, dict]:
    if "cannot_judge" in allowed and r.random() < 0.05:
        return "cannot_judge", {"reason_code": r.choice(_codes(boxes, "cannot_judge", "reason_code"))}
    claimed, refunded = int(t["amounts"]["claimed"]), int(t["amounts"].get("refunded") or 0)
    if refunded > 0:  # the buyer already has money (a settlement refund, an appealed judgment): never less
        if refunded >= claimed or r.random() < 0.5:
            return "judge", {"liability": "merchant", "remedy": "full_refund"}
        return "judge", {"liability": "merchant", "remedy": "partial_refund", "amount": r.randint(refunded, claimed)}
    liability = r.choices(("merchant", "customer", "both", "neither"), weights=(45, 25, 15, 15))[0]
    remedy = "no_refund"
    if liability in ("merchant", "both"):
        remedy = r.choices(("full_refund", "partial_refund", "return_and_refund", "no_refund"),
                           weights=(45, 30, 15, 10))[0]
    params: dict = {"liability": liability, "remedy": remedy}
    if remedy == "partial_refund":
        params["amount"] = r.randint(max(1, claimed // 10), claimed)
    return "judge", params


def _stage4(t: dict, boxes: dict, allowed: list[str], r: random.Random, hints: dict) -> tuple[str, dict]:
    payment, amounts = t.get("payment") or {}, t.get("amounts") or {}
    if payment.get("voucher") == "pending" and "reject_voucher" in allowed:
        due = int(amounts.get("refund") or 0) - int(amounts.get("refunded") or 0)
        sent = _voucher_amount(t)
        if sent is not None and sent != due:  # the transfer does not match what the buyer is owed
            reasons = _codes(boxes, "reject_voucher", "reason_code")
            return "reject_voucher", {"reason_code": "amount_mismatch" if "amount_mismatch" in reasons
                                      else r.choice(reasons)}
        return "verify_refund", {}
    if "verify_refund" in allowed or "complaint_fee" not in allowed:
        return "verify_refund", {}
    fees = sorted(_codes(boxes, "complaint_fee", "amount"))
    cap = min(hints.get("budget_left", fees[-1]), hints["asked"] - 1 if "asked" in hints else fees[-1])
    choices = [f for f in fees if f <= cap] or [min(fees)]
    return "complaint_fee", {"amount": r.choices(choices, weights=[FEE_WEIGHTS.get(f, 10) for f in choices])[0]}


def _voucher_amount(t: dict) -> int | None:
    """The amount of the latest voucher on the ticket, in minor units. Its note reads
    "<amount> <currency>": major units as a person reads them ("1,234.56 CNY"), or the wire's
    minor units ("123456 CNY") as older notes did."""
    vouchers = [e for e in t.get("evidence") or [] if e.get("kind") == "voucher" and e.get("party") == "merchant"]
    try:
        figure = str(vouchers[-1].get("note") or "").split()[0].replace(",", "") if vouchers else None
        if figure is None:
            return None
        return int(Decimal(figure) * 100) if "." in figure else int(figure)
    except (ValueError, IndexError, ArithmeticError):
        return None


DECISIONS = {1: _stage1, 2: _stage2, 3: _stage3, 4: _stage4}
