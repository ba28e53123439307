"""Reading ``[options.<stage>]`` tables against the contract's actions and parameters.

The contract (:data:`~policy.options.CONTRACT`) fixes which actions
and parameters exist; the file only picks labels and, for each choice
parameter, the ``[codes.*]`` list offering its choices. Checking one against
the other is where most policy mistakes are caught, so every problem is
recorded with its key path and reading goes on.
"""

from __future__ import annotations

from typing import Literal

from policy.options import (
    CONTRACT, LANGUAGES, REQUIRED_ACTIONS, ActionOption, Code, Label, ParamContract, ParamSpec,
    StageOptions,
)

__all__ = ["build_stage_options", "check_label"]


def check_label(value: object, path: str, problems: list[str]) -> Label | None:
    """Validate a ``{zh = "…", en = "…"}`` label, recording problems under ``path``."""
    if not isinstance(value, dict):
        problems.append(f"{path}: a label must be a table {{ zh = \"…\", en = \"…\" }}, not {value!r}")
        return None
    ok = True
    for lang in LANGUAGES:
        text = value.get(lang)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{path}: label missing {lang!r} (a non-empty string)")
            ok = False
    for key in value:
        if key not in LANGUAGES:
            problems.append(f"{path}.{key}: unknown key (a label has only zh and en)")
            ok = False
    return {lang: value[lang] for lang in LANGUAGES} if ok else None


def build_stage_options(
    stage: str,
    table: object,
    codes: dict[str, dict[str, Label]] | None,
    fee_choices: dict[Code, Label] | None,
    problems: list[str],
) -> StageOptions | None:
    """Read ``[options.<stage>]`` against the contract, recording every problem.

    ``codes`` are the validated code lists the parameters name: a broken list
    is empty and ``codes`` is None when ``[codes]`` itself is unusable — both
    reported already, so references to them are skipped quietly here.
    ``fee_choices`` is None when ``[complaint_fee]`` was broken.
    """
    path = f"options.{stage}"
    if not isinstance(table, dict):
        problems.append(f"{path}: must be a table of actions")
        return None
    before = len(problems)
    contract = CONTRACT[stage]
    actions: dict[str, ActionOption] = {}
    qc_reasons: dict[str, Label] = {}
    qc_list = table.get("qc_reasons")
    for key, value in table.items():
        if key == "qc_reasons":
            qc_reasons = _code_list(value, f"{path}.qc_reasons", codes, problems) or {}
        elif key in contract:
            option = _action(stage, key, value, codes, fee_choices, problems)
            if option is not None:
                actions[key] = option
        else:
            problems.append(f"{path}.{key}: {key!r} is not an action of {stage} "
                            f"(the contract has {', '.join(contract)})")
    for required in REQUIRED_ACTIONS[stage]:
        if required not in table:
            problems.append(f"{path}.{required}: missing ({stage} cannot move tickets on without it)")
    if stage != "stage1" and "qc_reasons" not in table:
        problems.append(f"{path}.qc_reasons: missing (name the code list of QC reasons)")
    if len(problems) > before:
        return None
    return StageOptions(stage, actions, qc_reasons, qc_list if isinstance(qc_list, str) else None)


def _code_list(value: object, path: str, codes: dict[str, dict[str, Label]] | None,
               problems: list[str]) -> dict[str, Label] | None:
    """The code list a key names (``category = "category"``), or None with a problem."""
    if codes is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{path}: must name a code list, e.g. \"category\" for [codes.category], not {value!r}")
        return None
    if value not in codes:
        problems.append(f"{path}: there is no code list [codes.{value}]")
        return None
    return codes[value]


def _action(stage: str, action: str, table: object, codes: dict[str, dict[str, Label]] | None,
            fee_choices: dict[Code, Label] | None, problems: list[str]) -> ActionOption | None:
    """Read ``[options.<stage>.<action>]``: a label, and a code list per choice parameter."""
    path = f"options.{stage}.{action}"
    if not isinstance(table, dict):
        problems.append(f"{path}: must be a table with a label")
        return None
    before = len(problems)
    label = check_label(table.get("label"), f"{path}.label", problems)
    contract = {param.name: param for param in CONTRACT[stage][action]}
    for key in table:
        if key != "label" and key not in contract:
            problems.append(f"{path}.{key}: {key!r} is not a parameter of {action} "
                            f"(it takes {', '.join(contract) or 'none'})")
    params: dict[str, ParamSpec] = {}
    for name, param in contract.items():
        spec = _param(param, table.get(name), name in table, f"{path}.{name}", codes, fee_choices, problems)
        if spec is not None:
            params[name] = spec
    if len(problems) > before or label is None:
        return None
    return ActionOption(action, label, params)


def _param(param: ParamContract, value: object, given: bool, path: str,
           codes: dict[str, dict[str, Label]] | None, fee_choices: dict[Code, Label] | None,
           problems: list[str]) -> ParamSpec | None:
    """One parameter's configuration: a code list for choices, nothing for amounts."""
    if param.kind in ("amount", "fee"):
        if given:
            where = "a free amount" if param.kind == "amount" else "its choices are complaint_fee.amounts"
            problems.append(f"{path}: takes no configuration here ({where})")
            return None
        if param.kind == "fee":
            if fee_choices is None:
                return None
            return ParamSpec(param.name, "choice", dict(fee_choices), "complaint fee amount")
        return ParamSpec(param.name, "amount", {}, "amount", param.required_when)
    if not given:
        problems.append(f"{path}: missing (name the [codes.*] list offering its choices)")
        return None
    choices = _code_list(value, path, codes, problems)
    if not choices:  # None: reported just now; empty: reported under [codes]
        return None
    if param.fixed is not None and set(choices) != set(param.fixed):
        problems.append(f"{path}: code list {value!r} must hold exactly the contract codes "
                        f"{', '.join(param.fixed)} (has {', '.join(choices) or 'none'})")
        return None
    if param.within is not None and not set(choices) <= set(param.within):
        stray = ", ".join(code for code in choices if code not in param.within)
        problems.append(f"{path}: code list {value!r} has codes outside the contract ({stray}); "
                        f"allowed: {', '.join(param.within)}")
        return None
    kind: Literal["choice", "many"] = "many" if param.kind == "many" else "choice"
    return ParamSpec(param.name, kind, dict(choices), str(value).replace("_", " "), code_list=str(value))
