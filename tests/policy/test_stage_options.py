"""The option boxes: what GET /options/{stage} shows, and what a 422 says."""

from __future__ import annotations

import json

import pytest

from policy import Policy, default_policy_dict, load_policy, policy_from_dict
from policy.options import StageOptions

JUDGE_OK = {"liability": "merchant", "remedy": "full_refund"}
STAGE1_OK = {"dispute_status": "not_reconciled", "category": "apparel", "from": "both", "items": ["photo"]}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def options(policy: Policy, stage: str) -> StageOptions:
    return policy.options_for(stage)


def test_stage1_describes_its_actions_params_and_qc_reasons_in_the_contract_shape(policy: Policy) -> None:
    shown = options(policy, "stage1").describe()
    assert set(shown) == {"stage", "actions", "qc_reasons"}
    assert shown["stage"] == "stage1"
    assert [a["action"] for a in shown["actions"]] == ["request_evidence", "to_judgment"]
    request = shown["actions"][0]
    assert request["label"] == {"zh": "请求补充凭证", "en": "Request evidence"}
    assert list(request["params"]) == ["dispute_status", "category", "from", "items"]
    assert request["params"]["items"]["many"] is True
    assert "many" not in request["params"]["category"]
    assert [c["code"] for c in request["params"]["from"]["choices"]] == ["user", "merchant", "both"]
    assert request["params"]["category"]["choices"][0] == {
        "code": "apparel", "label": {"zh": "服饰鞋包", "en": "Apparel, shoes & bags"}}
    assert {"code": "wrong_status", "label": {"zh": "纠纷现状选择错误", "en": "Wrong dispute status"}} \
        in shown["qc_reasons"]
    json.dumps(shown)  # the API serves it as is


def test_an_action_without_params_describes_an_empty_params_object(policy: Policy) -> None:
    shown = options(policy, "stage2").describe()
    assert shown["actions"][1] == {"action": "to_judgment",
                                   "label": {"zh": "提交判责", "en": "Send to judgment"}, "params": {}}


def test_a_free_amount_is_described_as_an_amount_type(policy: Policy) -> None:
    judge = options(policy, "stage3").describe()["actions"][0]
    assert list(judge["params"]) == ["liability", "remedy", "amount"]
    assert judge["params"]["amount"] == {"type": "amount"}


def test_complaint_fee_amounts_are_integer_choices_labelled_in_yuan(policy: Policy) -> None:
    fee = options(policy, "stage4").describe()["actions"][2]
    assert fee["action"] == "complaint_fee"
    choices = fee["params"]["amount"]["choices"]
    assert [c["code"] for c in choices] == [0, 500, 1000, 2000, 5000]
    assert choices[1]["label"] == {"zh": "5.00 元", "en": "5.00 CNY"}
    assert choices[0]["label"] == {"zh": "0.00 元", "en": "0.00 CNY"}


def test_describe_hands_out_copies(policy: Policy) -> None:
    shown = options(policy, "stage1").describe()
    shown["actions"][0]["label"]["en"] = "changed"
    assert options(policy, "stage1").describe()["actions"][0]["label"]["en"] == "Request evidence"


def test_valid_params_pass(policy: Policy) -> None:
    assert options(policy, "stage1").check("request_evidence", STAGE1_OK) == {}
    assert options(policy, "stage1").check("to_judgment", {"dispute_status": "user_timed_out",
                                                           "category": "food"}) == {}
    assert options(policy, "stage2").check("to_judgment", {}) == {}
    assert options(policy, "stage2").check("to_judgment", None) == {}  # type: ignore[arg-type]
    assert options(policy, "stage3").check("judge", JUDGE_OK) == {}
    assert options(policy, "stage3").check("judge", {**JUDGE_OK, "remedy": "partial_refund", "amount": 0}) == {}
    assert options(policy, "stage4").check("complaint_fee", {"amount": 0}) == {}
    assert options(policy, "stage4").check("reject_voucher", {"reason_code": "illegible"}) == {}


def test_an_action_not_configured_for_the_stage_is_keyed_action(policy: Policy) -> None:
    errors = options(policy, "stage2").check("judge", JUDGE_OK)
    assert list(errors) == ["action"]
    assert "'judge' is not an option of stage2" in errors["action"][0]


def test_an_unconfigured_code_is_named_with_its_list(policy: Policy) -> None:
    errors = options(policy, "stage1").check("request_evidence", {**STAGE1_OK, "category": "shoes"})
    assert errors == {"category": ["'shoes' is not a configured category"]}


def test_missing_and_unknown_params_are_reported_by_name(policy: Policy) -> None:
    errors = options(policy, "stage1").check("to_judgment", {"category": "food", "colour": "red"})
    assert errors["dispute_status"] == ["dispute_status is required"]
    assert errors["colour"][0].startswith("'colour' is not a parameter of to_judgment")
    assert "category" not in errors


@pytest.mark.parametrize("items, message", [
    ([], "choose at least one evidence kind"),
    ("photo", "must be a list of evidence kind codes, not 'photo'"),
    (["photo", "selfie"], "'selfie' is not a configured evidence kind"),
    (["photo", "photo"], "'photo' is listed twice"),
])
def test_many_params_need_a_non_empty_list_of_distinct_configured_codes(
        policy: Policy, items: object, message: str) -> None:
    errors = options(policy, "stage2").check("request_evidence", {"from": "user", "items": items})
    assert errors == {"items": [message]}


def test_the_party_must_be_a_contract_party(policy: Policy) -> None:
    errors = options(policy, "stage2").check("request_evidence", {"from": "platform", "items": ["video"]})
    assert errors == {"from": ["'platform' is not a configured party"]}


def test_a_partial_refund_needs_an_amount(policy: Policy) -> None:
    errors = options(policy, "stage3").check("judge", {**JUDGE_OK, "remedy": "partial_refund"})
    assert errors == {"amount": ["amount is required when remedy is partial_refund"]}


@pytest.mark.parametrize("amount", [True, 12.5, "1200", -1])
def test_an_amount_is_a_non_negative_integer(policy: Policy, amount: object) -> None:
    errors = options(policy, "stage3").check("judge", {**JUDGE_OK, "remedy": "partial_refund", "amount": amount})
    assert list(errors) == ["amount"]


def test_an_amount_with_another_remedy_is_optional_but_still_checked(policy: Policy) -> None:
    assert options(policy, "stage3").check("judge", {**JUDGE_OK, "amount": None}) == {}
    assert list(options(policy, "stage3").check("judge", {**JUDGE_OK, "amount": 1.5})) == ["amount"]


@pytest.mark.parametrize("amount", [300, True, "500", 500.0, None])
def test_a_complaint_fee_must_be_one_of_the_configured_amounts(policy: Policy, amount: object) -> None:
    errors = options(policy, "stage4").check("complaint_fee", {"amount": amount})
    assert list(errors) == ["amount"]


def test_params_must_be_an_object(policy: Policy) -> None:
    assert list(options(policy, "stage1").check("to_judgment", ["food"])) == ["params"]


def test_a_left_out_optional_action_is_not_offered() -> None:
    data = default_policy_dict()
    del data["options"]["stage3"]["cannot_judge"]
    stage3 = policy_from_dict(data).options_for("stage3")
    assert [a["action"] for a in stage3.describe()["actions"]] == ["judge"]
    assert list(stage3.check("cannot_judge", {"reason_code": "other"})) == ["action"]


def test_actions_are_offered_in_file_order() -> None:
    data = default_policy_dict()
    stage4 = data["options"]["stage4"]
    data["options"]["stage4"] = {"qc_reasons": stage4["qc_reasons"], "complaint_fee": stage4["complaint_fee"],
                                 "verify_refund": stage4["verify_refund"]}
    shown = policy_from_dict(data).options_for("stage4").describe()
    assert [a["action"] for a in shown["actions"]] == ["complaint_fee", "verify_refund"]


@pytest.mark.parametrize("qc, stage, ok", [
    ({"verdict": "ok"}, "stage2", True),
    ({"verdict": "flag", "reason_code": "wrong_category"}, "stage2", True),
    ({"verdict": "flag"}, "stage2", False),
    ({"verdict": "flag", "reason_code": "rude"}, "stage3", False),
    ({"verdict": "meh"}, "stage3", False),
    ({"verdict": "ok", "reason_code": "other"}, "stage3", False),
    ({"verdict": "ok", "note": "x"}, "stage4", False),
    (None, "stage2", False),
    (None, "stage1", True),
    ("ok", "stage2", False),
])
def test_qc_verdicts_are_checked_against_the_stage_qc_reasons(
        policy: Policy, qc: object, stage: str, ok: bool) -> None:
    errors = options(policy, stage).check_qc(qc)
    assert (errors == {}) is ok
    assert set(errors) <= {"qc"}
