"""A database that stops answering pins the requests waiting on it, never the whole server: while
every request that needs the database hangs, ``/health`` still answers within its deadline, naming the
database, and the requests beyond the gate's slots are told 503 at once instead of queueing."""
from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import waitress

from desk import create_api
from desk.server import OncePerInterval
from disputes.probes import PROBE_TIMEOUT
from disputes.wiring import App, connect_database
from models.base import database
from tests.network import Link

THREADS = 4


@pytest.fixture
def hung_api(app: App) -> Iterator[int]:
    """The API under waitress (THREADS threads) on a PostgreSQL address that accepts connections and
    never answers; yields its port."""
    with Link() as hole:
        hung = dataclasses.replace(app, db=connect_database(f"postgresql://root@127.0.0.1:{hole.port}/test"))
        server = waitress.create_server(create_api(hung, threads=THREADS), host="127.0.0.1", port=0,
                                        threads=THREADS)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            yield server.effective_port  # type: ignore[union-attr]
        finally:
            server.close()
            database.initialize(app.db)


def _get(port: int, path: str, timeout: float = 30.0) -> tuple[int | None, dict, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {uuid.uuid4().hex}"})
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body or b"{}"), time.monotonic() - started
    except OSError:
        return None, {}, time.monotonic() - started
    finally:
        conn.close()


def test_health_answers_in_time_while_every_database_request_hangs(hung_api: int) -> None:
    # Given more requests hanging on the database than the server has threads
    results: list[tuple[int | None, dict, float]] = []
    callers = [threading.Thread(target=lambda: results.append(_get(hung_api, "/me/tickets"))) for _ in range(8)]
    for caller in callers:
        caller.start()
    time.sleep(0.8)  # they have all arrived, and the gate's slots are taken

    # When a load balancer asks /health, it is answered within the probe's deadline, naming the database
    status, body, took = _get(hung_api, "/health")
    assert (status, body.get("database")) == (503, "down"), body
    assert took < PROBE_TIMEOUT + 1.0, took

    # And the requests beyond the gate's slots were told 503 at once, not queued behind the hung ones
    for caller in callers:
        caller.join(timeout=30)
    quick = [r for r in results if r[0] == 503 and r[2] < 2.0]
    assert len(quick) >= 8 - (THREADS - 2), results


def test_a_warning_per_request_becomes_one_a_minute_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.queue")
    once = OncePerInterval(interval=60.0)
    logger.addFilter(once)
    try:
        with caplog.at_level(logging.WARNING, logger="tests.queue"):
            for depth in range(50):
                logger.warning("Task queue depth is %d", depth)
            once._last -= 61  # a minute later
            logger.warning("Task queue depth is %d", 3)
    finally:
        logger.removeFilter(once)
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.queue"]
    assert lines == ["Task queue depth is 0", "Task queue depth is 3 (49 more such warnings in the last 60 s)"]
