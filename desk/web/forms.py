"""The decision form: from the clicked option button and its fields to the API's action body.

The ticket page renders one form per ticket: every configured action of the
stage is a submit button named ``action``, its parameters are fields named
``p.<action>.<param>``, and the QC verdict is ``qc.verdict`` /
``qc.reason_code``. Reading it back turns each value into the very code the
policy configured (fee amounts are integers), so `desk.actions.submit_action`
checks exactly what ``POST /tickets/{id}/actions`` would have received.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from werkzeug.datastructures import MultiDict

from desk.web.format import parse_amount


@dataclass
class Decision:
    """What the agent clicked: the API's body, plus problems found before it could be sent."""

    action: str
    expected_version: int
    params: dict[str, object] = field(default_factory=dict)
    qc: dict[str, object] | None = None
    #: Fields the desk itself could not read (an amount that is not a number), by parameter name.
    errors: dict[str, list[str]] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        return {"action": self.action, "expected_version": self.expected_version, "params": self.params,
                "qc": self.qc}


def field_name(action: str, param: str) -> str:
    return f"p.{action}.{param}"


def _code(text: str, spec: dict) -> object:
    """The configured code whose text is `text` (so ``"500"`` reads as the fee code ``500``)."""
    for choice in spec.get("choices", []):
        if str(choice["code"]) == text:
            return choice["code"]
    return text  # not configured: submit_action names it in its 422


def read_qc(form: MultiDict) -> dict[str, object] | None:
    verdict = form.get("qc.verdict", "").strip()
    if not verdict:
        return None
    if verdict == "flag":
        return {"verdict": "flag", "reason_code": form.get("qc.reason_code", "").strip() or None}
    return {"verdict": verdict}


def read_decision(form: MultiDict, options: dict, currency: str) -> Decision:
    """The decision in a posted form, against the stage's `options` (``StageOptions.describe()``)."""
    action = form.get("action", "").strip()
    try:
        version = int(form.get("expected_version", ""))
    except ValueError:
        version = -1  # the API answers 409: reload
    decision = Decision(action, version, qc=read_qc(form))
    option = next((o for o in options.get("actions", []) if o["action"] == action), None)
    if option is None:
        return decision
    for name, spec in option["params"].items():
        key = field_name(action, name)
        if spec.get("type") == "amount":
            text = form.get(key, "").strip()
            if text:
                try:
                    decision.params[name] = parse_amount(text, currency)
                except ValueError as problem:
                    decision.errors[name] = [str(problem)]
        elif spec.get("many"):
            chosen = [_code(v, spec) for v in form.getlist(key) if v]
            if chosen:
                decision.params[name] = chosen
        else:
            text = form.get(key, "").strip()
            if text:
                decision.params[name] = _code(text, spec)
    return decision
