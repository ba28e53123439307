"""What ``disputes demo`` shows while it runs: a progress bar on a terminal, a few plain lines elsewhere.

Both forms say the same thing in the same words: how many tickets are final
out of how many, how long the run has taken, and where the open tickets are —
grouped by what they wait for (`PHASES`), in full words, so no legend is
needed and the line fits 80 columns.

- On a terminal (`LiveProgress`): a bar that fills the width, the count and
  the timer on the first line, which never wraps; the open tickets below it,
  packed into as many lines as the width needs, never cut mid-phrase.
- Anywhere else — piped to a file or another program (`LineProgress`): no
  animation and no control codes; one line every `LINE_EVERY` seconds, one at
  each quarter of the tickets final, and one at the end.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping, Protocol

from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

#: Where an open ticket is, by what it waits for, in the order a ticket meets them (the state
#: machine's open states, each in exactly one phase).
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("in negotiation", ("negotiating", "awaiting_confirmation", "intercepting")),
    ("awaiting an agent", ("awaiting_takeover",)),
    ("with an agent", ("stage1", "stage2", "stage3", "stage4")),
    ("awaiting evidence", ("awaiting_evidence",)),
    ("awaiting payment", ("awaiting_payment",)),
)
#: What the demo prints under the bar, before the phases.
OPEN_LABEL = "still open: "
SEPARATOR = " · "
#: Off a terminal: a line at least this often (seconds), and at each of these shares of tickets final.
LINE_EVERY = 5.0
MILESTONES = (0.25, 0.5, 0.75, 1.0)


def open_by_phase(by_state: Mapping[str, int], terminal: Iterable[str]) -> list[tuple[str, int]]:
    """The open tickets per phase (phases with none left out); a state no phase names (a new
    one) is shown under its own name rather than lost."""
    done = set(terminal)
    named = {state for _, states in PHASES for state in states}
    counts = [(label, sum(by_state.get(s, 0) for s in states)) for label, states in PHASES]
    counts += [(state.replace("_", " "), n) for state, n in sorted(by_state.items())
               if state not in named and state not in done]
    return [(label, n) for label, n in counts if n]


def open_phrases(by_state: Mapping[str, int], terminal: Iterable[str]) -> list[str]:
    return [f"{n} {label}" for label, n in open_by_phase(by_state, terminal)]


class OpenTickets:
    """The "still open: …" lines under the bar: whole phrases packed into the width given."""

    def __init__(self) -> None:
        self.phrases: list[str] = []

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in pack(OPEN_LABEL, self.phrases or ["none"], options.max_width):
            yield Text(line, style="dim", no_wrap=True, overflow="ellipsis")


def pack(label: str, phrases: list[str], width: int, separator: str = SEPARATOR, indent: str | None = None) -> list[str]:
    """`label` then the phrases joined by `separator`, broken between phrases only (never inside
    one); continuation lines start with `indent` (default: under the first phrase). A single
    phrase wider than the line is left to the caller to cut."""
    if indent is None:
        indent = " " * len(label) if len(label) <= width // 3 else "  "
    lines: list[str] = []
    line = label
    for i, phrase in enumerate(phrases):
        if i and len(line) + len(separator) + len(phrase) > width:
            lines.append(line + separator.rstrip())
            line = indent + phrase
        else:
            line += (separator if i else "") + phrase
    lines.append(line)
    return lines


class Display(Protocol):
    def __enter__(self) -> "Display": ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, final: int, total: int, by_state: Mapping[str, int], terminal: Iterable[str]) -> None: ...


def progress_display(console: Console, total: int, clock: Callable[[], float] = time.monotonic) -> Display:
    """A bar on a terminal, plain lines elsewhere (``console.is_terminal``: a pipe, a file, a CI log)."""
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveProgress(console, total)
    return LineProgress(console, total, clock)


class _BarAndOpen(Progress):
    """rich's Progress — bar, count, timer on one line that never wraps — with the open tickets below."""

    def __init__(self, console: Console) -> None:
        super().__init__(TextColumn("[bold]tickets final"), BarColumn(bar_width=None), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=console, expand=True, transient=False)
        self.open = OpenTickets()

    def get_renderables(self):  # type: ignore[no-untyped-def]
        yield self.make_tasks_table(self.tasks)
        yield self.open


class LiveProgress:
    """The terminal form: redrawn in place, the last frame left on the screen."""

    def __init__(self, console: Console, total: int) -> None:
        self.progress = _BarAndOpen(console)
        self.task = self.progress.add_task("demo", total=total)

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, final: int, total: int, by_state: Mapping[str, int], terminal: Iterable[str]) -> None:
        self.progress.open.phrases = open_phrases(by_state, terminal)
        self.progress.update(self.task, completed=final, total=total)

    def renderable(self) -> object:
        """The frame as it is drawn now (for tests and for printing once)."""
        return self.progress.get_renderable()


class LineProgress:
    """The form for pipes and files: a plain report now and then, never a control code."""

    def __init__(self, console: Console, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.total, self.clock = console, total, clock
        self.started = self.last_at = clock()
        self.reached = 0.0  # the highest milestone reported
        self.last: tuple[int, int, tuple[str, ...]] | None = None
        self.printed: tuple[int, int, tuple[str, ...]] | None = None
        #: How many reports were printed (each one to three lines).
        self.reports = 0

    def __enter__(self) -> "LineProgress":
        self.started = self.last_at = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.last is not None and self.last != self.printed:
            self._print(*self.last)  # how it ended, whatever the interval

    def update(self, final: int, total: int, by_state: Mapping[str, int], terminal: Iterable[str]) -> None:
        now = self.clock()
        state = (final, total, tuple(open_phrases(by_state, terminal)))
        share = final / total if total else 0.0
        milestone = max((m for m in MILESTONES if share >= m), default=0.0)
        due = now - self.last_at >= LINE_EVERY and state != self.printed
        if milestone > self.reached or due:
            self.reached = max(self.reached, milestone)
            self._print(*state)
        self.last = state

    def _print(self, final: int, total: int, phrases: tuple[str, ...]) -> None:
        self.last_at = self.clock()
        self.printed = (final, total, phrases)
        elapsed = int(self.last_at - self.started)
        share = f" ({final / total:.0%})" if total else ""
        clock = f"{elapsed // 60}:{elapsed % 60:02d}  "
        head = f"{clock}{final} of {total} tickets final{share}"
        if phrases:
            lines = pack(f"{head}; {OPEN_LABEL}", list(phrases), self.console.width, ", ", " " * len(clock))
        else:
            lines = [head]
        for line in lines:
            self.console.print(line, markup=False, highlight=False, no_wrap=True, overflow="ignore")
        self.reports += 1
