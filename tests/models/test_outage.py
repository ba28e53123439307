"""`models.outage`: a dependency that stops answering is logged once when it begins, reminded with
the count every few minutes while it lasts, and once when it ends — however often it is tried."""
from __future__ import annotations

import gc
import logging
import weakref

import pytest

from models.outage import REMIND_EVERY, Outage, Outages
from tests.routing.test_affinity_cache import FakeClock as Clock

log = logging.getLogger("disputes.test.outage")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=log.name)
    return lambda: [(r.levelname, r.getMessage()) for r in caplog.records if r.name == log.name]


def test_many_failures_are_one_line_and_the_recovery_another(clock: Clock, lines) -> None:
    outage = Outage("broker", log, clock=clock)
    for _ in range(1000):  # the scheduler's relay, five times a second for 200 s
        outage.failed(ConnectionError("Error 111 connecting to 127.0.0.1:6379.\nConnection refused."))
        clock.now += 0.2
    outage.answered()
    outage.answered()
    assert lines() == [("WARNING", "broker unreachable: ConnectionError: Error 111 connecting to 127.0.0.1:6379."),
                       ("WARNING", "broker reachable again after 1000 failures over 200.0 s")]
    assert outage.failures == 0


def test_a_long_outage_is_recalled_every_few_minutes_with_its_count(clock: Clock, lines) -> None:
    outage = Outage("database", log, clock=clock)
    for _ in range(int(2.5 * REMIND_EVERY)):  # once a second
        outage.failed("OperationalError: connection refused")
        clock.now += 1
    assert lines() == [
        ("WARNING", "database unreachable: OperationalError: connection refused"),
        ("WARNING", (f"database still unreachable: {int(REMIND_EVERY) + 1} failures over {REMIND_EVERY:.0f} s, "
                     f"the last: OperationalError: connection refused")),
        ("WARNING", (f"database still unreachable: {2 * int(REMIND_EVERY) + 1} failures over "
                     f"{2 * REMIND_EVERY:.0f} s, the last: OperationalError: connection refused"))]


def test_the_next_outage_is_logged_again(clock: Clock, lines) -> None:
    outage = Outage("broker", log, clock=clock)
    for _ in range(2):
        outage.failed("TimeoutError: no answer within 2s")
        outage.failed("TimeoutError: no answer within 2s")
        clock.now += 3
        outage.answered()
    assert [message for _, message in lines()] == ["broker unreachable: TimeoutError: no answer within 2s",
                                                   "broker reachable again after 2 failures over 3.0 s"] * 2


def test_a_dependency_that_always_answered_is_never_mentioned(clock: Clock, lines) -> None:
    outage = Outage("broker", log, clock=clock)
    for _ in range(100):
        outage.answered()
    assert lines() == []


def test_each_thing_has_its_own_outage_for_as_long_as_it_lives() -> None:
    class Broker:
        pass

    outages = Outages("broker", log)
    first, second = Broker(), Broker()
    assert outages.of(first) is outages.of(first)
    assert outages.of(first) is not outages.of(second)
    forgotten = weakref.ref(outages.of(first))
    del first
    gc.collect()
    assert forgotten() is None
