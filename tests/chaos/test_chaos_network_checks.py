"""The network soak's own checks, without servers: its schedule mixes every network fault with the
process faults, and its checks fail on what they look for — a fault the system did not recover from
within the bound, /health or /metrics late or vague while the API is cut off, an outage logged on
every beat."""
from __future__ import annotations

from click.testing import CliRunner

from disputes.cli import main
from tools.bench.chaos import fault_schedule
from tools.bench.chaos_checks import chatty, network_checks
from tools.bench.chaos_network import HEAL_BOUND, KINDS, probes_ok
from tools.bench.chaos_run import Fault, RunResult

GOOD_PROBES = {"/health": {"status": 503, "seconds": 2.1, "down": ["broker", "database"]},
               "/metrics": {"status": 200, "seconds": 2.4}}


def _run(timeline: list[Fault], logs: dict[str, list[str]] | None = None) -> RunResult:
    dispatches = {"not done": 0, "dead": 0, "sent more than once": 0, "applied": 0, "refused": 0, "total": 0}
    return RunResult(True, 1.0, timeline, [], [], [], [], dispatches, [], [], (0, ""), {}, {}, network=True,
                     logs=logs or {})


def _failed(run: RunResult) -> set[str]:
    return {name.split(",")[0].split(" within")[0] for name, ok, _ in network_checks(run) if not ok}


def test_every_network_fault_kind_is_scheduled_beside_every_process_fault() -> None:
    order = fault_schedule(4, network=True)
    network = [step.split(":")[1:] for step in order if step.startswith("net:")]
    assert {kind for kind, _ in network} == set(KINDS)
    assert ["partition", "api"] in network and ["one-way", "api"] in network  # /health is asked then
    plain = [step for step in order if not step.startswith("net:")]
    assert plain == fault_schedule(4)  # the process faults are those of the one-host soak
    assert fault_schedule(4, network=True) == order  # the seed fixes it


def test_a_run_that_recovered_in_time_and_probed_well_passes() -> None:
    timeline = [Fault(10, "partition", "link api", 8.0, recovered_after=12.0, observed=GOOD_PROBES),
                Fault(30, "latency (300 ms ± 100)", "link stage2", 9.0, recovered_after=3.0),
                Fault(40, "SIGKILL", "disputes api", 1.0, recovered_after=500.0)]  # not a network fault
    assert all(ok for _, ok, _ in network_checks(_run(timeline))), network_checks(_run(timeline))


def test_a_fault_not_recovered_within_the_bound_fails() -> None:
    late = [Fault(10, "partition", "link api", 8.0, recovered_after=5.0, observed=GOOD_PROBES),
            Fault(20, "one-way", "link stage3", 8.0, recovered_after=HEAL_BOUND + 1)]
    never = [Fault(10, "partition", "link api", 8.0, recovered_after=None, observed=GOOD_PROBES)]
    assert any("moves on" in name for name, ok, _ in network_checks(_run(late)) if not ok)
    assert any("moves on" in name for name, ok, _ in network_checks(_run(never)) if not ok)


def test_health_must_answer_in_time_and_name_both_dependencies() -> None:
    assert probes_ok(GOOD_PROBES)
    slow = {**GOOD_PROBES, "/health": {**GOOD_PROBES["/health"], "seconds": 9.0}}
    vague = {**GOOD_PROBES, "/health": {"status": 503, "seconds": 1.0, "down": ["database"]}}
    hung_metrics = {**GOOD_PROBES, "/metrics": {"status": None, "seconds": 15.0, "error": "ReadTimeout"}}
    ok_while_cut_off = {**GOOD_PROBES, "/health": {"status": 200, "seconds": 0.1, "down": []}}
    for observed in (slow, vague, hung_metrics, ok_while_cut_off):
        assert not probes_ok(observed), observed
        run = _run([Fault(10, "partition", "link api", 8.0, recovered_after=5.0, observed=observed)])
        assert any("/health" in name for name, ok, _ in network_checks(run) if not ok)
    # a soak that never cut the API off has not shown it
    run = _run([Fault(10, "partition", "link stage1", 8.0, recovered_after=5.0)])
    assert any("/health" in name for name, ok, _ in network_checks(run) if not ok)


def test_a_warning_on_every_beat_is_caught_and_one_per_outage_is_not() -> None:
    beat = [f"2026-12-05 18:40:{s // 5:02d},{s % 5 * 200:03d} WARNING disputes.sending a batch of {s} messages "
            "was not enqueued" for s in range(200)]  # every 0.2 s for 40 s
    once = ["2026-12-05 18:40:00,000 WARNING disputes.scheduler redis unreachable: ConnectionError",
            "2026-12-05 18:41:10,000 WARNING disputes.scheduler redis reachable again after 350 failures over 70s"]
    assert chatty({"scheduler-3": once}) == []
    noisy = chatty({"scheduler-3": beat, "api-1": once})
    assert len(noisy) == 1 and noisy[0].startswith("scheduler-3: ")
    run = _run([Fault(10, "partition", "link api", 8.0, recovered_after=5.0, observed=GOOD_PROBES)],
               logs={"scheduler-3": beat})
    assert any("every beat" in name for name, ok, _ in network_checks(run) if not ok)


def test_bench_chaos_offers_the_network_soak() -> None:
    out = CliRunner().invoke(main, ["bench", "chaos", "--help"]).output
    assert "--network" in out


def test_a_500_from_the_api_under_faults_fails_the_soak_and_503s_do_not() -> None:
    """A dependency down must be answered 503 (seen: one claim answered 500 while PostgreSQL restarted)."""
    from tools.bench.chaos_checks import api_fault_check

    _, ok, detail = api_fault_check({"http 503": 146, "claim answered 503": 41, "stage1 claims": 1473})
    assert ok and detail == "503 × 146"
    _, ok, detail = api_fault_check({"http 500": 1, "http 503": 146, "claim answered 500": 1})
    assert not ok and "500 × 1" in detail


def test_a_traceback_per_message_is_caught_whatever_each_message_carried() -> None:
    """Seen: a stage worker logged dramatiq's "Failed to process message …" for every message and
    every try while PostgreSQL restarted; each line names its own message, the repeat is the same."""
    actions = ["verify_refund", "complaint_fee", "reject_voucher"]
    lines = [f"2026-12-06 00:00:{n // 4:02d},{n % 4 * 250:03d} ERROR dramatiq.worker.WorkerThread Failed to process "
             f"message stage4_handle({6080 + n}, kind='act', ticket_id={5900 + n}, payload={{'action': "
             f"'{actions[n % 3]}'}}) with unhandled exception." for n in range(18)]
    assert chatty({"stage4-5": lines})
    assert chatty({"stage4-5": lines[:12]}) == []
