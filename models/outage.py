"""An outage of a dependency, told in the log once: when it began, that it lasts, when it ended.

A process that cannot reach the database or a broker keeps trying — the
scheduler on every beat, the API on every send and every health check, the
intake on every reconnect — and a warning per try buries the one line that
matters under thousands that say the same, and never says when it ended. An
`Outage` logs ``broker unreachable: <reason>`` at the first failure, then stays
quiet but for a reminder with the count every `REMIND_EVERY` seconds, and logs
``broker reachable again after 1234 failures over 96.2 s`` at the first success
after. It lives in `models`, the lowest layer that reaches a dependency
(`models.sending` sends to the broker), so that every layer above can use it.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

#: While an outage lasts, how often (seconds) the log is reminded of it, with the count so far.
REMIND_EVERY = 300.0


def describe(error: BaseException | str) -> str:
    """An exception on one line: its type and the first line of its message (a string as it is)."""
    if isinstance(error, str):
        return error
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class Outage:
    """One dependency as one process sees it: every try reports `failed` or `answered`, and the log
    hears of the transitions only (thread-safe: the API's threads share one)."""

    def __init__(self, what: str, logger: logging.Logger, *, remind_every: float = REMIND_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.log, self.remind_every, self.clock = what, logger, remind_every, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._since = self._reminded = 0.0

    @property
    def failures(self) -> int:
        """The failures of the outage under way (0: the dependency answered last time)."""
        return self._failures

    def failed(self, reason: BaseException | str) -> None:
        """A try failed: said at the first failure of an outage (with the traceback of an exception,
        once), and as a reminder every `remind_every` seconds while it lasts."""
        with self._lock:
            now = self.clock()
            self._failures += 1
            if self._failures == 1:
                self._since = self._reminded = now
            elif now - self._reminded >= self.remind_every:
                self._reminded = now
            else:
                return
            failures, lasted = self._failures, now - self._since
        fields = {"dependency": self.what, "failures": failures}
        if failures == 1:
            raised = isinstance(reason, BaseException) and reason.__traceback__ is not None
            self.log.warning("%s unreachable: %s", self.what, describe(reason), extra=fields,
                             exc_info=reason if raised else None)
        else:
            self.log.warning("%s still unreachable: %d failures over %.0f s, the last: %s", self.what, failures,
                             lasted, describe(reason), extra={**fields, "outage_seconds": round(lasted, 1)})

    def answered(self) -> None:
        """A try worked: ends the outage under way, if any, in one line. At WARNING like its start, so
        that whoever reads the warnings learns that it ended."""
        if not self._failures:  # the usual case, on every send: no lock taken
            return
        with self._lock:
            failures, lasted = self._failures, self.clock() - self._since
            self._failures = 0
        if failures:
            self.log.warning("%s reachable again after %d failures over %.1f s", self.what, failures, lasted,
                             extra={"dependency": self.what, "failures": failures,
                                    "outage_seconds": round(lasted, 1)})


class Outages:
    """An `Outage` per thing of one kind (each broker, each database a process talks to), made at
    its first use and forgotten with the thing."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what, self.log = what, logger
        self._of: weakref.WeakKeyDictionary[object, Outage] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, thing: object) -> Outage:
        found = self._of.get(thing)
        if found is None:
            with self._lock:
                found = self._of.setdefault(thing, Outage(self.what, self.log))
        return found
