"""One stop told twice is one stop (`workers.entry.deduplicated`): what a worker process does when a
supervisor signals its process group and dramatiq's main process forwards the same signal."""
from __future__ import annotations

import signal

from workers.entry import SAME_STOP_SECONDS, deduplicated


def test_a_signal_echoed_within_the_window_reaches_the_handler_once_and_a_later_one_again() -> None:
    now = [100.0]
    heard: list[int] = []
    handler = deduplicated(lambda signum, frame: heard.append(signum), clock=lambda: now[0])

    handler(signal.SIGTERM, None)  # the supervisor's, to the group
    now[0] += 0.05
    handler(signal.SIGTERM, None)  # dramatiq's main process forwarding its own
    assert heard == [signal.SIGTERM]

    now[0] += SAME_STOP_SECONDS + 1  # an operator insisting, much later: dramatiq's "kill now" still works
    handler(signal.SIGTERM, None)
    assert heard == [signal.SIGTERM, signal.SIGTERM]
