"""The dramatiq CLI's way in: ``dramatiq workers.<queue>`` builds the app and declares the actor.

Each queue's module (`workers.stage2`…) calls `serve` when it is imported,
which only the ``dramatiq`` command does: the app is built from the
environment by the composition root, the queue's actor is declared on that
app's broker, and the broker is handed to dramatiq both as the module's
``broker`` attribute (``dramatiq workers.stage2:broker``) and as dramatiq's
global broker (``dramatiq workers.stage2``, which asks `dramatiq.get_broker`).
One process may serve several queues (``dramatiq workers.stage1
workers.stage2``): the first entry imported builds the process's app, the
others declare their queue on it. In-process runs (``disputes run``, tests)
never import these modules; they call `workers.declare_all(app)` on an app of
their own.

A supervisor that stops a process group (honcho, systemd's default
``KillMode=control-group``) sends SIGTERM to dramatiq's main process *and* to
its worker processes at once, and the main process forwards it: each worker
process hears one stop twice, which dramatiq's handler takes for "kill now"
(a warning, exit 1, the messages in hand abandoned to the reconciler).
`one_stop_per_signal_burst` makes the echo what it is — the same stop.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Callable

import dramatiq

from disputes.settings import settings_from_env
from disputes.wiring import App, build_app
from workers import declare

log = logging.getLogger("disputes.workers")

#: The app of this worker process, once an entry module has built it.
_served: list[App] = []
#: A second SIGTERM this soon after the first is the same stop told twice (the supervisor's to the
#: group, then dramatiq's main process forwarding its own); a later one still means "kill now".
SAME_STOP_SECONDS = 2.0

#: What `signal.getsignal` returns: a handler, or SIG_DFL / SIG_IGN, or None.
Handler = Callable[[int, FrameType | None], object] | int | None


def serve(queue: str) -> dramatiq.Broker:
    """The broker of this worker process, with `queue`'s actor declared on it."""
    if not _served:
        _served.append(build_app(settings_from_env(), adopt_log_handlers=True))
        dramatiq.set_broker(_served[0].broker)
        one_stop_per_signal_burst()
    declare(_served[0], queue)
    return _served[0].broker


def one_stop_per_signal_burst() -> None:
    """In a dramatiq worker process (its SIGTERM handler installed before it imports us), let a
    SIGTERM arriving within `SAME_STOP_SECONDS` of the first count as that same stop."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if getattr(current, "__module__", None) != "dramatiq.cli":
        return
    signal.signal(signal.SIGTERM, deduplicated(current))


def deduplicated(handler: Handler, window: float = SAME_STOP_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> Callable[[int, FrameType | None], None]:
    """`handler`, called once for a burst of signals: one within `window` of the first is dropped."""
    first: list[float] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        now = clock()
        if first and now - first[0] < window:
            log.debug("signal %s again within %.1fs: the same stop", signum, window)
            return
        first[:] = [now]
        if callable(handler):
            handler(signum, frame)

    return on_signal
