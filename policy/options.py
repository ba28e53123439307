"""The option boxes of each stage: the contract's actions, the policy's choices.

Agents only click configured options, so this module is the one place that
knows both halves of a button: which actions and parameters a stage has (the
SPEC §6 contract, fixed here in :data:`CONTRACT`) and which codes and labels
the operator configured for them (the policy file, read by
:mod:`policy.options_reader`). The desk renders
:meth:`StageOptions.describe`; the API refuses with 422 whatever
:meth:`StageOptions.check` objects to, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

__all__ = [
    "STAGES", "PARTIES", "EVIDENCE_KINDS", "LIABILITIES", "REMEDIES", "QC_VERDICTS",
    "CONTRACT", "REQUIRED_ACTIONS", "ParamContract", "ParamSpec", "ActionOption",
    "StageOptions", "Label", "Code", "LANGUAGES", "money_label",
]

Label = dict[str, str]
Code = Union[str, int]
ParamKind = Literal["choice", "many", "amount", "fee"]

#: The four floor stages, in order.
STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4")
#: Contract codes: labels may be configured, the codes may not.
PARTIES: tuple[str, ...] = ("user", "merchant", "both")
EVIDENCE_KINDS: tuple[str, ...] = (
    "photo", "video", "chat_log", "logistics_proof", "invoice", "voucher", "other",
)
LIABILITIES: tuple[str, ...] = ("merchant", "customer", "both", "neither")
REMEDIES: tuple[str, ...] = ("full_refund", "partial_refund", "return_and_refund", "no_refund")
QC_VERDICTS: tuple[str, ...] = ("ok", "flag")
#: Languages every label carries.
LANGUAGES: tuple[str, ...] = ("zh", "en")


@dataclass(frozen=True)
class ParamContract:
    """One parameter as the contract defines it; the policy fills in its choices.

    ``choice``/``many`` take codes from a named code list (``fixed``: the list
    must hold exactly these codes; ``within``: only these); ``amount`` is a
    free amount in minor units; ``fee`` picks one of ``complaint_fee.amounts``.
    """

    name: str
    kind: ParamKind
    fixed: tuple[str, ...] | None = None
    within: tuple[str, ...] | None = None
    required_when: tuple[str, str] | None = None


_P = ParamContract
#: Stage -> action -> parameters (SPEC §6). Order here is the order in describe().
CONTRACT: dict[str, dict[str, tuple[ParamContract, ...]]] = {
    "stage1": {
        "request_evidence": (_P("dispute_status", "choice"), _P("category", "choice"),
                             _P("from", "choice", fixed=PARTIES),
                             _P("items", "many", within=EVIDENCE_KINDS)),
        "to_judgment": (_P("dispute_status", "choice"), _P("category", "choice")),
    },
    "stage2": {
        "request_evidence": (_P("from", "choice", fixed=PARTIES),
                             _P("items", "many", within=EVIDENCE_KINDS)),
        "to_judgment": (),
    },
    "stage3": {
        "judge": (_P("liability", "choice", fixed=LIABILITIES),
                  _P("remedy", "choice", fixed=REMEDIES),
                  _P("amount", "amount", required_when=("remedy", "partial_refund"))),
        "cannot_judge": (_P("reason_code", "choice"),),
    },
    "stage4": {
        "verify_refund": (),
        "reject_voucher": (_P("reason_code", "choice"),),
        "complaint_fee": (_P("amount", "fee"),),
    },
}
#: Actions a policy may not leave out: without them tickets could not move on.
REQUIRED_ACTIONS: dict[str, tuple[str, ...]] = {
    "stage1": ("to_judgment",), "stage2": ("to_judgment",),
    "stage3": ("judge",), "stage4": ("verify_refund", "complaint_fee"),
}
#: Currencies whose minor unit is the major unit (no decimals).
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK"})


def money_label(amount: int, currency: str) -> Label:
    """``500, "CNY"`` -> ``{"zh": "5.00 元", "en": "5.00 CNY"}`` for fee buttons."""
    if currency in _ZERO_DECIMAL:
        text = f"{amount:,}"
    else:
        text = f"{amount // 100:,}.{amount % 100:02d}"
    return {"zh": f"{text} {'元' if currency == 'CNY' else currency}", "en": f"{text} {currency}"}


def money_text(amount: int, currency: str) -> str:
    """Money in a message a person reads: ``-123456, "CNY"`` -> ``-1,234.56 CNY`` (major units,
    the currency named; the wire's integers are minor units)."""
    return ("-" if amount < 0 else "") + money_label(abs(amount), currency)["en"]


def _is_int(value: object) -> bool:
    """An integer that is not a bool (JSON true must not pass as 1 fen)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ParamSpec:
    """A configured parameter: its kind, its choices (code -> label), how to name it.

    ``code_list`` remembers which ``[codes.*]`` list the choices came from so
    the effective policy can be written back out (``disputes policy show``).
    """

    name: str
    kind: Literal["choice", "many", "amount"]
    choices: dict[Code, Label]
    noun: str
    required_when: tuple[str, str] | None = None
    code_list: str | None = None

    def describe(self) -> dict[str, object]:
        """The parameter as ``GET /options/{stage}`` shows it."""
        if self.kind == "amount":
            return {"type": "amount"}
        shown: dict[str, object] = {
            "choices": [{"code": code, "label": dict(label)} for code, label in self.choices.items()]
        }
        if self.kind == "many":
            shown["many"] = True
        return shown

    def check(self, value: object) -> list[str]:
        """Problems with one supplied value (presence is the action's business)."""
        if self.kind == "amount":
            if not _is_int(value):
                return [f"must be a whole amount in minor units (an integer), not {value!r}"]
            return ["must not be negative"] if value < 0 else []  # type: ignore[operator]
        if self.kind == "many":
            return self._check_many(value)
        return [] if self._known(value) else [f"{value!r} is not a configured {self.noun}"]

    def _known(self, value: object) -> bool:
        """Whether ``value`` is one of the codes, without True sneaking in as 1."""
        return isinstance(value, (str, int)) and not isinstance(value, bool) and value in self.choices

    def _check_many(self, value: object) -> list[str]:
        if not isinstance(value, list):
            return [f"must be a list of {self.noun} codes, not {value!r}"]
        if not value:
            return [f"choose at least one {self.noun}"]
        errors = [f"{item!r} is not a configured {self.noun}" for item in value if not self._known(item)]
        seen: list[object] = []
        for item in value:
            if item in seen and f"{item!r} is listed twice" not in errors:
                errors.append(f"{item!r} is listed twice")
            seen.append(item)
        return errors


@dataclass(frozen=True)
class ActionOption:
    """One button of a stage: the action, its label, its configured parameters."""

    action: str
    label: Label
    params: dict[str, ParamSpec]

    def describe(self) -> dict[str, object]:
        """The action as ``GET /options/{stage}`` lists it."""
        return {
            "action": self.action,
            "label": dict(self.label),
            "params": {name: spec.describe() for name, spec in self.params.items()},
        }

    def check(self, params: dict[str, object]) -> dict[str, list[str]]:
        """Errors keyed by parameter name; ``{}`` when ``params`` is acceptable.

        A conditional parameter (``amount`` of ``judge``) is required only when
        its condition holds; otherwise it may be left out, and is still
        type-checked when given so a malformed value never slips through.
        """
        errors: dict[str, list[str]] = {}
        for name in params:
            if name not in self.params:
                taken = ", ".join(self.params) or "no parameters"
                errors[name] = [f"{name!r} is not a parameter of {self.action} (it takes {taken})"]
        for name, spec in self.params.items():
            value = params.get(name)
            if value is None:
                if spec.required_when is None:
                    errors[name] = [f"{name} is required"]
                elif params.get(spec.required_when[0]) == spec.required_when[1]:
                    key, wanted = spec.required_when
                    errors[name] = [f"{name} is required when {key} is {wanted}"]
                continue
            problems = spec.check(value)
            if problems:
                errors[name] = problems
        return errors


@dataclass(frozen=True)
class StageOptions:
    """Everything an agent of one stage may click, and the QC reasons they may flag."""

    stage: str
    actions: dict[str, ActionOption]
    qc_reasons: dict[str, Label]
    qc_list: str | None = None

    def describe(self) -> dict[str, object]:
        """Exactly the body of ``GET /options/{stage}`` (SPEC §6)."""
        return {
            "stage": self.stage,
            "actions": [option.describe() for option in self.actions.values()],
            "qc_reasons": [{"code": code, "label": dict(label)} for code, label in self.qc_reasons.items()],
        }

    def check(self, action: str, params: object) -> dict[str, list[str]]:
        """Why ``action`` with ``params`` is not a configured option here (``{}``: it is).

        Keys are parameter names, or ``action`` / ``params`` when the action or
        the parameter object itself is wrong — ready for the 422 ``fields``.
        """
        option = self.actions.get(action) if isinstance(action, str) else None
        if option is None:
            offered = ", ".join(self.actions)
            return {"action": [f"{action!r} is not an option of {self.stage} (configured: {offered})"]}
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return {"params": [f"params must be an object, not {params!r}"]}
        return option.check(params)

    def check_qc(self, qc: object) -> dict[str, list[str]]:
        """Errors in a QC verdict on the previous stage, keyed ``qc``.

        ``{"verdict": "ok"}`` or ``{"verdict": "flag", "reason_code": …}``;
        required from stage 2 on (stage 1 has no previous floor stage).
        """
        if qc is None:
            return {} if self.stage == "stage1" else {"qc": [f"a QC verdict is required in {self.stage}"]}
        if not isinstance(qc, dict):
            return {"qc": [f"qc must be an object, not {qc!r}"]}
        errors = [f"{key!r} is not a QC field (verdict, reason_code)" for key in qc
                  if key not in ("verdict", "reason_code")]
        verdict, reason = qc.get("verdict"), qc.get("reason_code")
        if verdict not in QC_VERDICTS:
            errors.append(f"verdict must be 'ok' or 'flag', not {verdict!r}")
        elif verdict == "flag" and not (isinstance(reason, str) and reason in self.qc_reasons):
            errors.append(f"{reason!r} is not a configured QC reason of {self.stage}")
        elif verdict == "ok" and reason is not None:
            errors.append("an 'ok' verdict takes no reason_code")
        return {"qc": errors} if errors else {}

