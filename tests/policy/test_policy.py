"""Loading and checking the policy file: the default, overrides, and every problem at once."""

from __future__ import annotations

import tomllib
from datetime import date, time
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.durations import parse_duration
from policy import (
    Policy, PolicyError, default_policy_dict, dump_policy, load_policy, policy_from_dict,
)


def problems_of(data: dict) -> list[str]:
    with pytest.raises(PolicyError) as error:
        policy_from_dict(data)
    return error.value.problems


def test_the_packaged_default_loads_with_the_documented_values() -> None:
    policy = load_policy()
    assert {name: str(policy.deadline(name)) for name in (
        "merchant_response", "customer_confirmation", "interception", "evidence", "payment_voucher", "appeal",
    )} == {"merchant_response": "48h", "customer_confirmation": "72h", "interception": "48h",
           "evidence": "72h", "payment_voucher": "3wd", "appeal": "7d"}
    assert policy.evidence.max_rounds == 3
    assert [str(policy.sla.accept), str(policy.sla.first_feedback)] == ["1h", "24h"]
    assert [str(policy.sla.resolve_simple), str(policy.sla.resolve_complex)] == ["3wd", "7wd"]
    assert policy.sla.warn_at == (50, 75, 90)
    assert policy.calendar.zone == "Asia/Shanghai"
    assert policy.calendar.working_days == (1, 2, 3, 4, 5)
    assert policy.calendar.hours == (time(9), time(18))
    assert policy.complaint_fee.amounts == (0, 500, 1000, 2000, 5000)
    assert (policy.complaint_fee.monthly_budget, policy.complaint_fee.approval_threshold) == (10_000_000, 2000)
    assert policy.complaint_fee.currency == "CNY"
    assert policy.liability.both_merchant_share_percent == 50
    assert policy.rollout == dict.fromkeys(
        ("direct_refund", "negotiated_reject", "intercept_48h", "platform_judgment"), 100)
    assert policy.routing.mode == "pull"
    assert (str(policy.routing.lease), str(policy.routing.unassigned_fallback)) == ("30m", "15m")
    assert policy.routing.weights == {"satisfaction": 0.5, "qc": 0.3, "load": 0.2}
    assert policy.routing.new_agent_floor == 0.6
    assert policy.intake_secrets == {}
    assert set(policy.options) == {"stage1", "stage2", "stage3", "stage4"}


def test_every_default_label_is_bilingual() -> None:
    policy = load_policy()
    for codes in policy.codes.values():
        for label in codes.values():
            assert label["zh"].strip() and label["en"].strip()
    assert {"apparel", "electronics", "food", "beauty", "home", "books", "baby", "other"} <= set(
        policy.codes["category"])


def test_default_policy_dict_is_a_fresh_copy_each_time() -> None:
    first = default_policy_dict()
    first["deadlines"]["evidence"] = "1s"
    assert default_policy_dict()["deadlines"]["evidence"] == "72h"


def test_tests_can_override_the_default_with_second_long_deadlines() -> None:
    data = default_policy_dict()
    data["deadlines"]["evidence"] = "2s"
    data["sla"]["accept"] = "1s"
    policy = policy_from_dict(data)
    assert policy.deadline("evidence") == parse_duration("2s")
    assert policy.sla.accept.seconds() == 1


def test_a_policy_file_on_disk_loads(tmp_path: Path) -> None:
    data = default_policy_dict()
    data["intake"]["secrets"] = {"order-system": "s3cr3t"}
    path = tmp_path / "policy.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    assert load_policy(path).intake_secrets == {"order-system": "s3cr3t"}
    assert load_policy(str(path)).intake_secrets == {"order-system": "s3cr3t"}


def test_a_missing_file_or_broken_toml_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[deadlines\nevidence = ", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(broken)


def test_a_bad_policy_lists_every_problem_at_once() -> None:
    data = default_policy_dict()
    data["colour"] = "blue"
    data["deadlines"]["evidence"] = "3x"
    del data["deadlines"]["appeal"]
    data["evidence"]["max_rounds"] = 0
    data["sla"]["warn_at"] = [90, 50]
    data["calendar"].update(zone="Mars/Olympus", hours=["18:00", "09:00"], holidays=["2026-13-01"])
    data["codes"]["category"] = {}
    del data["codes"]["remedy"]["full_refund"]["en"]
    data["codes"]["evidence_kind"]["selfie"] = {"zh": "自拍", "en": "Selfie"}
    data["codes"]["liability"]["platform"] = {"zh": "平台责任", "en": "Platform liable"}
    del data["options"]["stage4"]
    data["options"]["stage1"]["escalate"] = {"label": {"zh": "升级", "en": "Escalate"}}
    del data["options"]["stage2"]["request_evidence"]["items"]
    data["complaint_fee"]["amounts"] = [0, -500, 10.5]
    data["complaint_fee"]["monthly_budget"] = 1e7
    data["rollout"]["direct_refund"] = 150
    data["rollout"]["fast_refund"] = 50
    data["routing"]["mode"] = "round_robin"

    problems = problems_of(data)

    expected = [
        "colour: unknown key",
        "deadlines.evidence: '3x' is not a duration (use 90s, 30m, 48h, 3d or 3wd)",
        "deadlines.appeal: missing",
        "evidence.max_rounds: must be at least 1",
        "sla.warn_at: must be in ascending order",
        "calendar.zone: 'Mars/Olympus' is not a known IANA time zone",
        "calendar.hours: must start before they end",
        "calendar.holidays[0]: '2026-13-01' is not an ISO date",
        "codes.category: must be a non-empty table",
        "codes.remedy.full_refund: label missing 'en'",
        "options.stage1.request_evidence.items: code list 'evidence_kind' has codes outside the contract (selfie)",
        "options.stage3.judge.liability: code list 'liability' must hold exactly the contract codes",
        "options.stage4: missing",
        "options.stage1.escalate: 'escalate' is not an action of stage1",
        "options.stage2.request_evidence.items: missing",
        "complaint_fee.amounts[1]: must be at least 0",
        "complaint_fee.amounts[2]: must be a whole number, not 10.5",
        "complaint_fee.monthly_budget: must be a whole number",
        "rollout.direct_refund: must be between 0 and 100",
        "rollout.fast_refund: unknown key",
        "routing.mode: 'round_robin' is not a routing mode",
    ]
    for fragment in expected:
        assert any(problem.startswith(fragment) for problem in problems), (fragment, problems)


def test_the_error_message_lists_the_problems_one_a_line() -> None:
    data = default_policy_dict()
    data["deadlines"]["evidence"] = "3x"
    data["routing"]["mode"] = "lottery"
    with pytest.raises(PolicyError) as error:
        policy_from_dict(data)
    assert str(error.value).startswith("policy has 2 problems:\n  - deadlines.evidence")


def test_a_label_needs_both_languages_and_nothing_else() -> None:
    data = default_policy_dict()
    data["options"]["stage3"]["judge"]["label"] = {"zh": "判责", "fr": "Juger"}
    problems = problems_of(data)
    assert "options.stage3.judge.label: label missing 'en' (a non-empty string)" in problems
    assert any(p.startswith("options.stage3.judge.label.fr: unknown key") for p in problems)


def test_amount_parameters_take_no_configuration() -> None:
    data = default_policy_dict()
    data["options"]["stage3"]["judge"]["amount"] = "remedy"
    data["options"]["stage4"]["complaint_fee"]["amount"] = "remedy"
    problems = problems_of(data)
    assert any(p.startswith("options.stage3.judge.amount: takes no configuration") for p in problems)
    assert any(p.startswith("options.stage4.complaint_fee.amount: takes no configuration") for p in problems)


def test_a_choice_must_name_an_existing_code_list() -> None:
    data = default_policy_dict()
    data["options"]["stage1"]["to_judgment"]["category"] = "categories"
    assert problems_of(data) == ["options.stage1.to_judgment.category: there is no code list [codes.categories]"]


def test_required_actions_and_qc_reasons_cannot_be_left_out() -> None:
    data = default_policy_dict()
    del data["options"]["stage3"]["judge"]
    del data["options"]["stage2"]["qc_reasons"]
    problems = problems_of(data)
    assert any(p.startswith("options.stage3.judge: missing") for p in problems)
    assert any(p.startswith("options.stage2.qc_reasons: missing") for p in problems)


def test_calendar_routing_and_secrets_problems_are_reported() -> None:
    data = default_policy_dict()
    data["calendar"]["working_days"] = [1, 8]
    data["calendar"]["extra_working_days"] = ["2026-10-01"]
    data["routing"]["weights"] = {"satisfaction": 0, "qc": 0, "load": 0}
    data["routing"]["new_agent_floor"] = 1.5
    data["routing"]["lease"] = 30
    data["intake"]["secrets"] = {"order-system": ""}
    data["complaint_fee"]["currency"] = "yuan"
    problems = problems_of(data)
    for fragment in ("calendar.working_days[1]: must be between 1 and 7",
                     "calendar.extra_working_days: 2026-10-01 is also listed as a holiday",
                     "routing.weights: at least one weight must be above 0",
                     "routing.new_agent_floor: must be between 0.0 and 1.0",
                     "routing.lease: 30 is not a duration",
                     "intake.secrets.order-system: must be a non-empty string",
                     "complaint_fee.currency: 'yuan' is not an ISO 4217 code"):
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


def test_a_policy_that_is_not_a_table_is_one_problem() -> None:
    assert problems_of([]) == ["policy: must be a table, not []"]  # type: ignore[arg-type]


def test_optional_sections_default_when_left_out() -> None:
    data = default_policy_dict()
    for section in ("liability", "rollout", "intake"):
        del data[section]
    data["rollout"] = {"intercept_48h": 10}
    policy = policy_from_dict(data)
    assert policy.liability.both_merchant_share_percent == 50
    assert policy.rollout["intercept_48h"] == 10 and policy.rollout["direct_refund"] == 100
    assert policy.intake_secrets == {}


def test_holidays_may_be_written_as_strings() -> None:
    data = default_policy_dict()
    data["calendar"]["holidays"] = ["2026-10-01"]
    data["calendar"]["hours"] = [time(8, 30), "17:30"]
    calendar = policy_from_dict(data).calendar
    assert not calendar.is_working_day(date(2026, 10, 1))
    assert calendar.hours == (time(8, 30), time(17, 30))


def test_the_dumped_policy_loads_back_to_the_same_policy() -> None:
    policy = load_policy()
    text = dump_policy(policy)
    assert policy_from_dict(tomllib.loads(text)) == policy


def test_the_dump_hides_intake_secrets_unless_asked() -> None:
    data = default_policy_dict()
    data["intake"]["secrets"] = {"order-system": "s3cr3t"}
    policy = policy_from_dict(data)
    assert "s3cr3t" not in dump_policy(policy)
    assert "s3cr3t" in dump_policy(policy, reveal_secrets=True)


def test_unknown_deadlines_and_stages_are_key_errors() -> None:
    policy: Policy = load_policy()
    with pytest.raises(KeyError):
        policy.deadline("lunch")
    with pytest.raises(KeyError):
        policy.options_for("stage9")
    assert policy.options_for("stage2").stage == "stage2"


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the default policy, to aim junk at."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found: list[tuple] = []
    for key, child in items:
        found.append(prefix + (key,))
        found.extend(_paths(child, prefix + (key,)))
    return found


DEFAULT_PATHS = _paths(default_policy_dict())
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), st.text(max_size=8),
                 st.sampled_from(["3wd", "party", "qc_reason", "09:00", "2026-10-01"]),
                 st.lists(st.integers(-5, 200), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.sampled_from(DEFAULT_PATHS), JUNK), min_size=1, max_size=4))
def test_any_junk_in_any_field_is_a_policy_error_or_a_policy(edits: list[tuple[tuple, object]]) -> None:
    data = default_policy_dict()
    for path, value in edits:
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced the parent
    try:
        policy = policy_from_dict(data)
    except PolicyError as error:
        assert error.problems and all(isinstance(problem, str) for problem in error.problems)
    else:
        assert policy_from_dict(tomllib.loads(dump_policy(policy, reveal_secrets=True))) == policy
