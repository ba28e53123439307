"""`disputes report`'s figures against the seeded history of conftest.py, whose answers are known."""
from __future__ import annotations

import json

import pytest

from policy import Policy
from tools.report import REPORT_VERSION, build_report

from .conftest import NOW, T1


@pytest.fixture()
def report(seeded, report_policy: Policy) -> dict:
    return build_report(policy=report_policy, now=NOW)


def test_every_section_is_present_in_a_fixed_order_and_the_json_form_round_trips(report: dict) -> None:
    assert list(report) == ["report_version", "window", "tickets", "dispute_types", "dispute_trend", "latency",
                            "stages", "phases", "evidence_rounds", "liability", "options", "negotiation", "sla",
                            "qc", "agents", "money", "events", "intake"]
    assert report["report_version"] == REPORT_VERSION
    assert json.loads(json.dumps(report)) == report


def test_dispute_types_are_counted_and_trended_per_day_in_the_calendar_zone(report: dict) -> None:
    assert report["tickets"]["total"] == 5 and report["tickets"]["open"] == 1
    assert report["dispute_types"] == {"quality": 3, "logistics": 1, "not_as_described": 1}
    assert report["dispute_trend"] == {"days": ["2026-11-23", "2026-11-24"],
                                       "by_type": {"quality": [2, 1], "logistics": [0, 1], "not_as_described": [1, 0]}}


def test_evidence_rounds_per_category_and_dispute_type_and_what_was_asked_for(report: dict) -> None:
    rounds = report["evidence_rounds"]
    assert rounds["tickets"] == 4 and rounds["distribution"] == {"0": 2, "1": 1, "2": 1}
    assert rounds["by_category"] == {"apparel": {"tickets": 2, "mean": 0.5}, "food": {"tickets": 2, "mean": 1.0}}
    assert rounds["by_dispute_type"] == {"not_as_described": {"tickets": 1, "mean": 0.0},
                                         "quality": {"tickets": 3, "mean": 1.0}}
    assert rounds["by_category_and_type"] == {"apparel": {"not_as_described": 0.0, "quality": 1.0},
                                              "food": {"quality": 1.0}}
    assert rounds["requested"] == {"from": {"both": 1, "merchant": 1, "user": 1},
                                   "items_by_category": {"apparel": {"photo": 1, "video": 1},
                                                         "food": {"invoice": 1, "photo": 1}},
                                   "items_by_dispute_type": {"quality": {"photo": 2, "invoice": 1, "video": 1}}}


def test_liability_shares_per_category_and_the_top_merchants_by_merchant_liable_disputes(report: dict) -> None:
    li = report["liability"]
    assert li["counts"] == {"both": 1, "customer": 1, "merchant": 1} and li["merchant_side_share"] == 0.6667
    assert li["by_category"]["apparel"] == {"judged": 2, "counts": {"both": 1, "merchant": 1},
                                            "merchant_side_share": 1.0}
    assert li["by_category"]["food"]["merchant_side_share"] == 0.0
    assert li["merchants"] == 2
    assert li["top_merchants"] == [{"merchant_id": "m1", "judged": 2, "merchant_liable": 2, "share": 1.0}]


def test_option_usage_names_the_options_never_and_always_chosen(report: dict) -> None:
    stage1 = report["options"]["stage1"]
    assert stage1["decisions"] == 3
    request = stage1["actions"]["request_evidence"]
    assert request["uses"] == 2 and request["share"] == 0.6667
    assert request["params"]["from"] == {"counts": {"user": 1, "merchant": 0, "both": 1},
                                         "never": ["merchant"], "always": []}
    assert request["params"]["items"]["always"] == ["photo"] and "invoice" in request["params"]["items"]["never"]
    assert "request_evidence.items=photo" in stage1["always_chosen"]
    stage3 = report["options"]["stage3"]
    assert stage3["actions"]["judge"]["params"]["liability"]["never"] == ["neither"]
    assert "cannot_judge" in stage3["never_chosen"] and stage3["actions"]["cannot_judge"]["uses"] == 0
    fee = report["options"]["stage4"]["actions"]["complaint_fee"]["params"]["amount"]
    assert fee["counts"]["500"] == 1 and fee["always"] == ["500"] and "0" in fee["never"]
    assert "reject_voucher" in report["options"]["stage4"]["never_chosen"]
    assert "amount" not in report["options"]["stage3"]["actions"]["judge"]["params"]  # a free amount


def test_time_per_state_per_stage_visit_and_per_phase_as_median_and_p95(report: dict) -> None:
    stages = report["stages"]
    assert stages["stage1"] == {"count": 3, "median_s": 100.0, "p95_s": 120.0}  # takeover wait included
    assert stages["stage2"] == {"count": 3, "median_s": 60.0, "p95_s": 100.0}  # C visits stage 2 twice
    assert stages["stage3"] == {"count": 3, "median_s": 100.0, "p95_s": 140.0}
    assert stages["stage4"] == {"count": 3, "median_s": 60.0, "p95_s": 60.0}
    assert report["latency"]["awaiting_evidence"] == {"visible": False, "count": 3, "median_s": 200.0, "p95_s": 200.0}
    assert report["phases"] == {"negotiation": {"count": 2, "median_s": 90.0, "p95_s": 100.0},
                                "floor": {"count": 3, "median_s": 560.0, "p95_s": 760.0},
                                "end_to_end": {"count": 4, "median_s": 445.0, "p95_s": 760.0}}


def test_sla_compliance_and_negotiation_outcomes(report: dict) -> None:
    assert report["sla"]["accept"] == {"met": 3, "breached": 1, "pending": 0, "compliance": 0.75}
    assert report["sla"]["resolve"] == {"met": 3, "breached": 0, "pending": 1, "compliance": 1.0}
    negotiation = report["negotiation"]
    assert (negotiation["tickets"], negotiation["straight_to_floor"]) == (2, 3)
    assert negotiation["resolved_without_agent"] == 1
    assert negotiation["by_option"]["no_answer"]["to_floor"] == 1


def test_agents_throughput_qc_flags_and_the_satisfaction_of_the_tickets_they_closed(report: dict) -> None:
    agents = {a["name"]: a for a in report["agents"]["agents"]}
    assert [a["name"] for a in report["agents"]["agents"]] == ["s1", "s2", "s3", "s4"]  # most decisions first
    assert agents["s1"] == {"agent_id": 1, "name": "s1", "stage": "stage1", "decisions": 6, "tickets": 3, "qc_ok": 3,
                            "qc_flag": 1, "flag_rate": 0.25, "surveys": 0, "satisfaction": None}
    assert (agents["s2"]["decisions"], agents["s2"]["qc_flag"], agents["s2"]["flag_rate"]) == (3, 1, 0.5)  # claims
    assert (agents["s4"]["surveys"], agents["s4"]["satisfaction"], agents["s4"]["flag_rate"]) == (3, 4.0, None)
    assert report["agents"]["by_stage"]["stage4"]["satisfaction"] == 4.0
    assert report["agents"]["satisfaction"] == {"answers": 4, "mean": 3.5,
                                                "distribution": {"1": 0, "2": 1, "3": 1, "4": 1, "5": 1}}
    assert report["qc"] == {"ok": 7, "flag": 2, "reasons": {"unnecessary_evidence_request": 1, "wrong_category": 1}}


def test_money_moved_by_kind_is_in_integer_minor_units_once_per_idempotency_key(report: dict) -> None:
    assert report["money"] == {"complaint_fee_paid": {"CNY": 500}, "refund_deducted": {"CNY": 13_000}}
    assert all(type(v) is int for by_currency in report["money"].values() for v in by_currency.values())


def test_a_window_narrows_every_section_to_the_tickets_created_in_it(seeded, report_policy: Policy) -> None:
    day2 = build_report(since=T1.isoformat(), policy=report_policy, now=NOW)
    assert day2["tickets"]["total"] == 2 and day2["liability"]["judged"] == 0 and day2["money"] == {}
    assert day2["agents"]["agents"] == [] and day2["agents"]["satisfaction"]["answers"] == 1
    assert day2["dispute_trend"]["days"] == ["2026-11-24"]
    assert build_report(until="2026-11-24", policy=report_policy, now=NOW)["tickets"]["total"] == 3
