"""What `disputes demo` shows while it runs: a bar that reads well at 80 columns on a terminal, and
a few plain lines — no animation, no control codes — when the output is piped."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from models.states import OPEN_STATES, TERMINAL_STATES
from tools.simulation.progress import (LINE_EVERY, PHASES, LineProgress, LiveProgress, open_by_phase, pack,
                                       progress_display)

TERMINAL = [s.value for s in TERMINAL_STATES]
#: A busy moment of a big run: every phase open, three-digit counts (the widest line there is).
BUSY = {"negotiating": 130, "awaiting_confirmation": 48, "intercepting": 21, "awaiting_takeover": 148,
        "stage1": 101, "stage2": 149, "stage3": 171, "stage4": 166, "awaiting_evidence": 138,
        "awaiting_payment": 131, "closed": 370, "resolved": 250, "withdrawn": 2}
#: The abbreviations the bar used to print, unexplained.
ABBREVIATIONS = re.compile(r"\b(neg|conf|icpt|take|evid|pay)\b")
CONTROL = re.compile(r"[\r\x1b]")


def terminal(width: int) -> Console:
    return Console(width=width, force_terminal=True, record=True, file=io.StringIO(), color_system="truecolor")


def frame(width: int, final: int = 622, total: int = 1_000, by_state: dict | None = None) -> list[str]:
    console = terminal(width)
    display = LiveProgress(console, total)
    display.update(final, total, BUSY if by_state is None else by_state, TERMINAL)
    console.print(display.renderable())
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [80, 60, 120])
def test_the_bar_count_and_timer_fit_one_line_and_every_line_fits_the_width(width):
    lines = frame(width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    bar = lines[0]
    assert bar.startswith("tickets final ") and "━" in bar, bar
    assert re.search(r" 622/1000 0:00:0\d$", bar), bar  # count and timer at the end, never pushed out
    assert bar.count("━") + bar.count("╸") + bar.count("╺") >= 10  # the bar keeps a readable length


def test_the_open_tickets_are_in_full_words_under_the_bar_never_cut_mid_phrase():
    lines = frame(80)
    text = " ".join(line.strip() for line in lines[1:])
    assert text.startswith("still open: ")
    for phrase in ("199 in negotiation", "148 awaiting an agent", "587 with an agent", "138 awaiting evidence",
                   "131 awaiting payment"):
        assert phrase in text  # each phrase whole on one line
    assert not ABBREVIATIONS.search(text)
    assert len(lines) <= 3  # the bar and at most two lines of phases at 80 columns
    assert frame(80, final=0, by_state={})[1].strip() == "still open: none"


def test_every_open_state_of_the_machine_belongs_to_exactly_one_phase():
    named = [state for _, states in PHASES for state in states]
    assert sorted(named) == sorted(s.value for s in OPEN_STATES)
    # a state added later without a phase is shown under its own name, not lost
    assert open_by_phase({"on_hold": 2, "closed": 5}, TERMINAL) == [("on hold", 2)]


def test_the_live_display_leaves_its_last_frame_at_80_columns():
    console = terminal(80)
    display = progress_display(console, 200)
    assert isinstance(display, LiveProgress)
    with display:
        display.update(57, 200, BUSY, TERMINAL)
        display.update(200, 200, {"closed": 150, "resolved": 50}, TERMINAL)
    # (the record keeps every frame drawn, without the cursor moves that redraw them in place)
    last = console.export_text().rstrip("\n").split("\n")[-2:]
    assert re.search(r"tickets final ━+ 200/200 0:00:0\d$", last[0]), last
    assert len(last[0].split("still open: none")[-1]) <= 80
    assert last[1] == "still open: none"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_piped_output_is_a_few_plain_lines_at_milestones_and_every_few_seconds():
    # Given a console that is not a terminal (a pipe, a file)
    out = io.StringIO()
    console = Console(file=out, width=80)
    clock = FakeClock()
    display = progress_display(console, 200, clock)
    assert isinstance(display, LineProgress)
    # When the demo polls every 0.2 s for a minute, the tickets turning final steadily
    with display:
        for step in range(300):
            clock.now = 100.0 + step * 0.2
            final = min(200, step)
            display.update(final, 200, {"negotiating": 200 - final, "closed": final} if final < 200
                           else {"closed": 200}, TERMINAL)
    text = out.getvalue()
    # Then a report comes every LINE_EVERY seconds or at a quarter of the tickets, never a frame
    assert not CONTROL.search(text) and "━" not in text
    assert display.reports <= 60 / LINE_EVERY + 4
    for milestone in ("50 of 200 tickets final (25%)", "100 of 200 tickets final (50%)",
                      "150 of 200 tickets final (75%)", "200 of 200 tickets final (100%)"):
        assert text.count(milestone) == 1, milestone
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1].endswith("200 of 200 tickets final (100%)")  # the end, once
    assert "still open: 150 in negotiation" in text  # the phases, in words
    assert not ABBREVIATIONS.search(text)


def test_piped_output_says_how_it_ended_even_between_reports():
    out = io.StringIO()
    clock = FakeClock()
    display = LineProgress(Console(file=out, width=80), 10, clock)
    with display:
        display.update(0, 10, {"negotiating": 10}, TERMINAL)
        clock.now += 1
        display.update(1, 10, {"negotiating": 9, "closed": 1}, TERMINAL)  # no milestone, not due
    assert out.getvalue().splitlines()[-1] == "0:01  1 of 10 tickets final (10%); still open: 9 in negotiation"


def test_packing_breaks_between_phrases_only():
    lines = pack("still open: ", ["12 in negotiation", "3 awaiting an agent", "40 with an agent"], 40)
    assert lines == ["still open: 12 in negotiation ·", "            3 awaiting an agent ·",
                     "            40 with an agent"]
