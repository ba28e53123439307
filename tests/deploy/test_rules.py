"""deploy/prometheus: the alerting rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), the example configuration passes ``promtool check config``, and every
metric, label and label value the rules name is one `disputes api` exports — so the rules cannot
rot silently when a metric is renamed. promtool comes with Debian's ``prometheus`` package; these
tests skip without it, unless ``OP_REQUIRE_SERVERS=1`` (CI), where they fail."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from desk.metrics import render_metrics
from disputes.wiring import App
from tests.deploy.prom import (
    DEPLOY_README,
    PROMETHEUS_CONFIG,
    RULES,
    RULES_TEST,
    SYNTHETIC,
    compressed,
    grouping_labels,
    load_rules,
    metric_names,
    need_binary,
    seconds,
    selectors,
)


def promtool(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([need_binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_rules_pass_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(RULES)).stdout
    assert f"SUCCESS: {len(load_rules())} rules found" in out


def test_the_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULES_TEST)).stdout


def test_every_alert_has_a_unit_test_that_shows_it_firing() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yml"]
    fired = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in load_rules()}


def test_the_example_configuration_passes_promtool_check_config() -> None:
    promtool("check", "config", str(PROMETHEUS_CONFIG))


def test_the_time_compressed_copy_of_the_e2e_test_is_still_valid(tmp_path) -> None:
    copy = tmp_path / "rules.yml"
    copy.write_text(compressed(RULES.read_text(encoding="utf-8")), encoding="utf-8")
    promtool("check", "rules", str(copy))
    original, short = load_rules(), load_rules(copy)
    assert [r["alert"] for r in short] == [r["alert"] for r in original]
    for before, after in zip(original, short):
        if "for" in before:
            assert seconds(after["for"]) == max(3, round(seconds(before["for"]) / 12))
        assert "m]" not in after["expr"] and "m:" not in after["expr"], after["expr"]


# --- every name in the rules is exported ------------------------------------------------------------

@pytest.fixture
def exported(app: App, publish: Callable, complaint: Callable) -> dict[str, tuple[str, dict[str, set[str]]]]:
    """What ``GET /metrics`` serves on a database with one complaint admitted (so every family has
    a sample): each sample name -> (its family, {label: values seen})."""
    publish("complaint.submitted", complaint(negotiation="failed"))
    with app.db.connection_context():
        families = list(text_string_to_metric_families(render_metrics(app).decode("utf-8")))
    found: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for family in families:
        for sample in family.samples:
            labels = found.setdefault(sample.name, (family.name, {}))[1]
            for label, value in sample.labels.items():
                if label != "le":
                    labels.setdefault(label, set()).add(value)
    return found


def test_the_exposition_holds_every_family_the_rules_might_name(exported) -> None:
    assert {"disputes_queue_depth", "disputes_transitions_total", "disputes_stage_latency_seconds_bucket",
            "disputes_sla_breaches_total", "disputes_intake_rejected_total"} <= set(exported)


def test_every_metric_a_rule_selects_is_exported(exported) -> None:
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = names - set(exported) - SYNTHETIC
        assert not unknown, f"{rule['alert']} selects {sorted(unknown)}, which /metrics does not export"


def test_every_label_and_label_value_a_rule_names_is_exported(exported) -> None:
    job = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"][0]["job_name"]
    target_labels = {"job", "instance"}
    for rule in load_rules():
        expr = rule["expr"]
        used_labels: set[str] = set(target_labels)
        for name, matchers in selectors(expr):
            labels = exported[name][1] if name in exported else {}
            used_labels |= set(labels)
            for label, op, value in matchers:
                if label in target_labels:
                    assert label != "job" or value == job, \
                        f"{rule['alert']}: job {value!r}, but the config scrapes {job!r}"
                    continue
                assert label in labels, f"{rule['alert']}: {name} has no label {label!r} ({sorted(labels)})"
                if op == "=":
                    assert value in labels[label], f"{rule['alert']}: {name}{{{label}={value!r}}} is never exported"
                elif op == "=~":
                    assert any(re.fullmatch(value, v) for v in labels[label]), (rule["alert"], name, label, value)
        for name in metric_names(expr) - SYNTHETIC:
            used_labels |= set(exported[name][1])
        missing = grouping_labels(expr) - used_labels
        assert not missing, f"{rule['alert']} groups by {sorted(missing)}, a label none of its metrics has"


def test_every_alert_carries_a_severity_a_summary_and_a_runbook_section_of_deploy_readme() -> None:
    readme = DEPLOY_README.read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)}
    for rule in load_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"deploy/README.md#{rule['alert'].lower()}", runbook
        assert rule["alert"].lower() in anchors, f"deploy/README.md has no section {rule['alert']}"
