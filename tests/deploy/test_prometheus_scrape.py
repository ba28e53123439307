"""A real Prometheus (Debian's ``prometheus``) scrapes a real ``disputes api`` and pages when a
stage's workers stop, on PostgreSQL, Redis and RabbitMQ.

The system runs as the Procfile runs it — ``disputes api``, ``disputes intake``, ``disputes
scheduler`` and ``dramatiq workers.stage1`` as separate processes — and Prometheus, started on a
free port with storage of its own, scrapes ``/metrics`` every second with the example
configuration (deploy/prometheus/prometheus.yml) and evaluates deploy/prometheus/rules.yml every
second, its durations divided by 12 (``for: 1m`` becomes 5 s; thresholds unchanged; promtool
tests the rules as written). The stage-1 workers apply a decision, are stopped, and two more
decisions wait on their queue: ``DisputesStageQueueNotDraining`` fires for stage1 and nothing
else; the workers come back and it stops; the API is stopped and ``DisputesApiDown`` fires.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.deploy.prom import (
    RULES,
    Prometheus,
    compressed,
    free_port,
    load_rules,
    metric_names,
    need_binary,
)
from tests.e2e.conftest import DISPUTES, Stack, complaint_body, wait_for

pytestmark = pytest.mark.servers

TICKETS = 3


def firing(prometheus: Prometheus, state: str | None = "firing") -> set[tuple[str, str]]:
    """(alert name, queue label) of the alerts in `state` (None: pending or firing) that are about
    this test's system: a queue's, or the API's. Not the intake's: other test sessions publish to
    the shared ``op.intake`` exchange, and this test's intake rejects what they send."""
    return {(a["labels"]["alertname"], a["labels"].get("queue", "")) for a in prometheus.alerts(state)
            if "queue" in a["labels"] or a["labels"]["alertname"].startswith("DisputesApi")}


def test_prometheus_scrapes_the_api_and_pages_when_a_stages_workers_stop(stack: Stack, tmp_path: Path) -> None:
    from models.ticket import Ticket

    binary = need_binary("prometheus")
    port = free_port()
    api = stack.start("api", DISPUTES + ["api", "--host", "127.0.0.1", "--port", str(port)])
    stack.start_intake()
    stack.start_scheduler()
    workers = stack.start_workers("stage1", ["workers.stage1"], queues=["stage1"], threads=2)
    prometheus = Prometheus(binary, tmp_path / "prometheus", f"127.0.0.1:{port}",
                            compressed(RULES.read_text(encoding="utf-8")))

    def logs() -> str:
        return f"{stack.logs()}\n{prometheus.tail()}"
    try:
        (agent,) = stack.add_agents(("e2e-s1", 1, TICKETS + 2))
        for _ in range(TICKETS):
            stack.publish("complaint.submitted", complaint_body(negotiation="failed"))

        def all_waiting() -> bool:
            with stack.app.db.connection_context():
                return Ticket.select().where(Ticket.state == "awaiting_takeover").count() == TICKETS
        wait_for(all_waiting, 30, f"{TICKETS} tickets awaiting takeover", on_timeout=logs)
        wait_for(prometheus.ready, 30, "Prometheus to be ready", on_timeout=logs)

        # Prometheus scrapes the API, and every metric the rules select is in what it scraped.
        def scraped() -> bool:
            return [r["value"][1] for r in prometheus.query('up{job="disputes-api"}')] == ["1"]
        wait_for(scraped, 30, "Prometheus to scrape the API's /metrics", interval=0.5, on_timeout=logs)
        names = set(prometheus.get("/api/v1/label/__name__/values"))
        wanted = set().union(*(metric_names(rule["expr"]) for rule in load_rules()))
        assert wanted <= names, f"not scraped: {sorted(wanted - names)}"
        assert prometheus.get("/api/v1/rules")["groups"], "the rules are loaded"

        # With its workers running, a stage-1 decision is applied and nothing pages.
        options = stack.api("GET", "/options/stage1", agent, expect=200)[1]
        to_judgment = next(a for a in options["actions"] if a["action"] == "to_judgment")
        params = {name: spec["choices"][0]["code"] for name, spec in to_judgment["params"].items()}

        def decide() -> int:
            claimed = stack.api("POST", "/me/claim", agent, expect=200)[1]
            stack.api("POST", f"/tickets/{claimed['id']}/actions", agent,
                      {"action": "to_judgment", "expected_version": claimed["version"], "params": params},
                      expect=202)
            return claimed["id"]
        stack.wait_state(decide(), "stage3", agent)
        time.sleep(3)  # a few scrapes and evaluations of a healthy system
        assert firing(prometheus) == set(), logs()

        # The stage-1 workers stop; two decisions wait on their queue.
        workers.popen.send_signal(signal.SIGTERM)
        assert workers.popen.wait(timeout=30) == 0, logs()
        workers.killed = True
        stopped_at = time.monotonic()
        waiting = [decide() for _ in range(TICKETS - 1)]

        alerts = wait_for(lambda: firing(prometheus), 40, "an alert to fire", interval=0.5, on_timeout=logs)
        assert alerts == {("DisputesStageQueueNotDraining", "stage1")}, alerts
        print(f"DisputesStageQueueNotDraining fired {time.monotonic() - stopped_at:.1f}s after the stop")
        (alert,) = [a for a in prometheus.alerts("firing")
                    if a["labels"]["alertname"] == "DisputesStageQueueNotDraining"]
        assert alert["labels"]["severity"] == "critical"
        assert "stage1" in alert["annotations"]["summary"]

        # The workers come back: the decisions are applied and the alert stops.
        stack.start_workers("stage1", ["workers.stage1"], queues=["stage1"], threads=2)
        for ticket_id in waiting:
            stack.wait_state(ticket_id, "stage3", agent, timeout=30)
        wait_for(lambda: not firing(prometheus, None), 30, "the alert to stop", interval=0.5, on_timeout=logs)

        # The API stops: DisputesApiDown fires for its instance.
        api.popen.send_signal(signal.SIGTERM)
        api.popen.wait(timeout=30)
        api.killed = True
        alerts = wait_for(lambda: firing(prometheus), 30, "DisputesApiDown to fire", interval=0.5, on_timeout=logs)
        assert alerts == {("DisputesApiDown", "")}, alerts
        (alert,) = [a for a in prometheus.alerts("firing") if a["labels"]["alertname"] == "DisputesApiDown"]
        assert alert["labels"]["instance"] == f"127.0.0.1:{port}"
    finally:
        prometheus.stop()
