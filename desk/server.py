"""Serving the API: waitress in one process, or gunicorn with several.

``disputes run`` (everything in one process, the in-process broker) and
``disputes api`` by default call `serve`: waitress, a pure-Python WSGI server,
threads as the unit of concurrency (each request takes a pooled database
connection for its duration). Python runs one request at a time per process,
so ``disputes api --workers N`` calls `serve_processes`: gunicorn's master
process keeps N worker processes (threaded) on one port, restarts any that
die, and stops them gracefully on SIGTERM; each worker builds its own app
after the fork, so no connection crosses it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from desk.app import create_api
from disputes.settings import Settings
from disputes.wiring import App, build_app

log = logging.getLogger("disputes.api")

#: Worker threads per API process.
THREADS = 8


class OncePerInterval(logging.Filter):
    """Lets one record through per `interval` seconds, telling how many it held back since the last.

    waitress warns "Task queue depth is N" for every request that finds every thread busy: under a
    burst, or while the database hangs, that is a line per request saying one thing — the server is
    saturated — which this says once a minute, with the count."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval, self._last, self._held = interval, float("-inf"), 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._held += 1
                return False
            held, self._held, self._last = self._held, 0, now
        if held:
            record.msg = f"{record.msg} ({held} more such warnings in the last {self.interval:.0f} s)"
        return True


def serve(app: App, host: str | None = None, port: int | None = None, *, threads: int = THREADS) -> None:
    """Serve the API until interrupted (defaults: ``OP_API_HOST``/``OP_API_PORT``)."""
    import waitress

    host = host or app.settings.api_host
    port = app.settings.api_port if port is None else port
    log.info("API listening on http://%s:%s/ (desk at /desk/, %d threads)", host, port, threads)
    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, OncePerInterval) for f in queue_log.filters):
        queue_log.addFilter(OncePerInterval())
    waitress.serve(create_api(app, threads=threads), host=host, port=port, threads=threads, ident="disputes")


def serve_processes(load: Callable[[], Any], host: str, port: int, *, workers: int, threads: int = THREADS) -> None:
    """Serve the WSGI app that `load` builds (in each worker, after the fork) from `workers`
    processes on one port until SIGTERM/SIGINT (gunicorn, threaded workers)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": f"{host}:{port}", "workers": workers, "threads": threads,
                               "worker_class": "gthread", "accesslog": None, "loglevel": "warning",
                               "graceful_timeout": 30, "keepalive": 75, "proc_name": "disputes-api"}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    log.info("API listening on http://%s:%s/ (desk at /desk/, %d processes × %d threads)", host, port,
             workers, threads)
    Server().run()


def desk_in_worker(settings: Settings, threads: int = THREADS) -> Callable[[], Any]:
    """What each API worker process serves: the API on an app of its own."""
    def load() -> Any:
        return create_api(build_app(settings), threads=threads)
    return load
