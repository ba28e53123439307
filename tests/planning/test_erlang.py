"""The queueing maths of `disputes plan` against published Erlang C values, an independent exact
computation of the textbook formula, and the edges a plan runs into (no load, an unstable queue).

Sources of the published values (each checked below):

- The classic call-centre example (callcentrehelper.com "Erlang C formula – made simple"; the same
  numbers in the README of the CRAN package ErlangC): 100 calls in 30 minutes, 180 s handling
  (10 erlangs), target 20 s. P(wait) 0.6821 / 0.4494 / 0.2853 / 0.1741 for 11..14 agents; service
  level 38.96 % (11), 79.6 % (13), 88.84 % (14); ASA with 14 agents 7.84 s; 14 agents for 80/20.
- The vignette of the R package Erlang (phubers/erlang): 200 calls per half hour, 180 s handling
  (20 erlangs), 80 % within 60 s: "we need 23 agents to hit our service level target".
- The Wolfram Language documentation of ``ErlangC``: two 1 Mbps lines, 150 packets/s of 10 kbit
  (1.5 erlangs on 2 servers), P(wait) = 9/14; a support centre with 30 calls/hour of 5 minutes
  (2.5 erlangs) needs 6 employees for 90 % of the calls not to be delayed at all.
- Halfin & Whitt (1981), "Heavy-traffic limits for queues with many exponential servers": with
  N = A + β√A servers, P(wait) → 1 / (1 + β Φ(β) / φ(β)) as A grows.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from planning.erlang import (
    MAX_SERVERS,
    chance_within,
    erlang_c,
    mean_wait,
    servers_needed,
)

# -- independent computations -------------------------------------------------------------------


def exact_erlang_c(servers: int, load: Fraction) -> Fraction:
    """The textbook formula, A^N/N! · N/(N−A) / (Σ_{k<N} A^k/k! + A^N/N! · N/(N−A)), in exact
    rational arithmetic (no recurrence, no rounding)."""
    term = Fraction(1)
    total = Fraction(0)
    for k in range(servers):
        total += term
        term = term * load / (k + 1)  # A^(k+1)/(k+1)!
    top = term * servers / (servers - load)
    return top / (total + top)


def log_space_erlang_c(servers: int, load: float) -> float:
    """The same formula in floating point for thousands of servers: log terms, math.fsum."""
    logs = [k * math.log(load) - math.lgamma(k + 1) for k in range(servers)]
    top = servers * math.log(load) - math.lgamma(servers + 1) + math.log(servers / (servers - load))
    peak = max(*logs, top)
    below = math.fsum(math.exp(x - peak) for x in logs)
    return math.exp(top - peak) / (below + math.exp(top - peak))


def halfin_whitt(beta: float) -> float:
    phi = math.exp(-beta * beta / 2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(beta / math.sqrt(2)))
    return 1 / (1 + beta * big_phi / phi)


# -- the classic call-centre example ------------------------------------------------------------

RATE = 100 / 1800  # calls per second
AHT = 180.0  # seconds
TARGET = 20.0  # seconds
LOAD = RATE * AHT  # 10 erlangs


def test_the_example_is_ten_erlangs() -> None:
    assert LOAD == pytest.approx(10.0)


@pytest.mark.parametrize("servers, waits", [(11, 0.6821), (12, 0.4494), (13, 0.2853), (14, 0.1741)])
def test_probability_of_waiting_matches_the_published_table(servers: int, waits: float) -> None:
    assert erlang_c(servers, LOAD) == pytest.approx(waits, abs=5e-5)


def test_the_seven_digit_values_of_the_r_package() -> None:
    # CRAN ErlangC README: 11 agents P(wait) 0.6821182, SL 0.3896138; 14 agents 0.1741319, 0.88835, 7.8359 s.
    assert erlang_c(11, LOAD) == pytest.approx(0.6821182, abs=5e-8)
    assert chance_within(11, LOAD, AHT, TARGET) == pytest.approx(0.3896138, abs=5e-8)
    assert erlang_c(14, LOAD) == pytest.approx(0.1741319, abs=5e-8)
    assert chance_within(14, LOAD, AHT, TARGET) == pytest.approx(0.88835, abs=5e-6)
    assert mean_wait(14, LOAD, AHT) == pytest.approx(7.83593701177724, rel=1e-9)


@pytest.mark.parametrize("servers, level", [(13, 0.796), (14, 0.888)])
def test_service_level_within_twenty_seconds(servers: int, level: float) -> None:
    assert chance_within(servers, LOAD, AHT, TARGET) == pytest.approx(level, abs=5e-4)


def test_average_speed_of_answer_with_fourteen_agents_is_under_eight_seconds() -> None:
    assert mean_wait(14, LOAD, AHT) == pytest.approx(7.8, abs=0.05)


def test_fourteen_agents_for_eighty_percent_within_twenty_seconds() -> None:
    staffing = servers_needed(RATE, AHT, TARGET, 0.8)
    assert staffing.servers == 14
    assert chance_within(13, LOAD, AHT, TARGET) < 0.8 <= staffing.within
    assert staffing.waits == pytest.approx(0.1741, abs=5e-5)
    assert staffing.within == pytest.approx(0.888, abs=5e-4)
    assert staffing.mean_wait == pytest.approx(7.84, abs=0.01)


# -- more published values ----------------------------------------------------------------------


def test_twenty_erlangs_need_twenty_three_agents_for_eighty_sixty() -> None:
    # phubers/erlang vignette: 200 calls / 30 min, AHT 180 s, 80 % within 60 s -> 23 agents.
    staffing = servers_needed(200 / 1800, 180.0, 60.0, 0.8)
    assert staffing.servers == 23
    assert chance_within(22, 20.0, 180.0, 60.0) < 0.8


def test_two_lines_carrying_one_and_a_half_erlangs_wait_nine_times_in_fourteen() -> None:
    # Wolfram ErlangC documentation: ErlangC[2, 150 * 10 kbit / 1 Mbps] = ErlangC[2, 3/2] = 9/14.
    assert exact_erlang_c(2, Fraction(3, 2)) == Fraction(9, 14)
    assert erlang_c(2, 1.5) == pytest.approx(9 / 14, rel=1e-12)


def test_support_centre_needs_six_for_ninety_percent_not_delayed() -> None:
    # Wolfram ErlangC documentation: 30 calls/hour, 5 minutes each, 90 % must not be delayed at all.
    rate, handling = 30 / 3600, 300.0
    staffing = servers_needed(rate, handling, 0.0, 0.9)  # a target of 0: answered at once
    assert staffing.servers == 6
    assert erlang_c(5, 2.5) > 0.1 >= erlang_c(6, 2.5)
    assert exact_erlang_c(6, Fraction(5, 2)) == pytest.approx(erlang_c(6, 2.5), rel=1e-12)


# -- the recurrence against the formula -------------------------------------------------------


@pytest.mark.parametrize("servers", [1, 2, 3, 7, 14, 30, 60, 120, 200])
@pytest.mark.parametrize("occupancy", [Fraction(1, 10), Fraction(1, 2), Fraction(4, 5), Fraction(19, 20),
                                       Fraction(99, 100)])
def test_erlang_c_equals_the_exact_textbook_formula(servers: int, occupancy: Fraction) -> None:
    load = occupancy * servers
    assert erlang_c(servers, float(load)) == pytest.approx(float(exact_erlang_c(servers, load)), rel=1e-10)


@pytest.mark.parametrize("servers, load", [(1000, 968.4), (5000, 4900.0), (10000, 9900.0)])
def test_thousands_of_servers_stay_accurate(servers: int, load: float) -> None:
    # Far beyond where A^N / N! overflows a float: the recurrence must still give the formula's value
    # and approach the Halfin-Whitt limit (within 3 % at these sizes).
    value = erlang_c(servers, load)
    assert value == pytest.approx(log_space_erlang_c(servers, load), rel=1e-9)
    assert value == pytest.approx(halfin_whitt((servers - load) / math.sqrt(load)), rel=0.03)


# -- edges ------------------------------------------------------------------------------------


def test_no_load_means_no_wait_and_no_servers() -> None:
    assert erlang_c(3, 0.0) == 0.0
    assert chance_within(3, 0.0, 180.0, 20.0) == 1.0
    assert mean_wait(3, 0.0, 180.0) == 0.0
    staffing = servers_needed(0.0, 180.0, 20.0, 0.8)
    assert staffing.servers == 0 and staffing.within == 1.0 and staffing.mean_wait == 0.0


@pytest.mark.parametrize("servers, load", [(10, 10.0), (9, 10.0), (1, 3.5)])
def test_an_unstable_queue_always_waits_forever(servers: int, load: float) -> None:
    assert erlang_c(servers, load) == 1.0
    assert chance_within(servers, load, 180.0, 20.0) == 0.0
    assert mean_wait(servers, load, 180.0) == math.inf


def test_just_stable_queue_is_nearly_always_waiting() -> None:
    assert 0.99 < erlang_c(10, 9.999) < 1.0
    assert mean_wait(10, 9.999, 180.0) > 100_000


def test_more_servers_never_make_it_worse() -> None:
    values = [chance_within(n, LOAD, AHT, TARGET) for n in range(11, 40)]
    assert values == sorted(values) and values[-1] == pytest.approx(1.0, abs=1e-9)
    waits = [erlang_c(n, LOAD) for n in range(11, 40)]
    assert waits == sorted(waits, reverse=True)


def test_servers_needed_grows_with_the_promise() -> None:
    needed = [servers_needed(RATE, AHT, TARGET, p).servers for p in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)]
    assert needed == sorted(needed) and needed[0] < needed[-1]


def test_servers_needed_grows_with_the_rate() -> None:
    needed = [servers_needed(RATE * k / 4, AHT, TARGET, 0.8).servers for k in range(81)]
    assert needed == sorted(needed) and needed[0] == 0 and needed[-1] > 150


def test_servers_needed_shrinks_as_the_target_wait_grows() -> None:
    needed = [servers_needed(RATE, AHT, t, 0.8).servers for t in (0.0, 5.0, 20.0, 60.0, 600.0, 3600.0)]
    assert needed == sorted(needed, reverse=True)
    assert needed[-1] == 11  # any stable staffing meets a long enough target; 10 erlangs need at least 11


def test_servers_needed_is_the_fewest() -> None:
    for rate in (0.001, 0.01, 0.05, 0.2):
        for probability in (0.8, 0.95):
            staffing = servers_needed(rate, AHT, TARGET, probability)
            assert chance_within(staffing.servers, rate * AHT, AHT, TARGET) >= probability
            assert chance_within(staffing.servers - 1, rate * AHT, AHT, TARGET) < probability


def test_an_impossible_load_is_refused_not_looped_on() -> None:
    with pytest.raises(ValueError, match=str(MAX_SERVERS)):
        servers_needed(2 * MAX_SERVERS, 1.0, 1.0, 0.8)
