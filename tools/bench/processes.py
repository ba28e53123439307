"""Child processes of the benchmarks: ``python -m tools.bench.processes KIND ...``.

* ``intake QUEUE EXCHANGE`` — the real intake consumer (`workers.intake.consume`) on a private queue;
* ``raw-intake QUEUE EXCHANGE COUNT OUT`` — the baseline: consume and ack COUNT messages, doing nothing,
  then write ``{"count", "first", "last"}`` (epoch seconds) to the file OUT and exit;
* ``noop-http PORT THREADS WORKERS`` — the API baseline: a WSGI app answering ``{}`` under the API's server.

They read the environment the way the real commands do (``OP_DATABASE_URL``...).
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time

from kombu import Connection, Consumer, Exchange, Queue

from desk.server import serve_processes
from disputes.settings import settings_from_env
from disputes.wiring import build_app
from workers.intake import ORDERED, consume


def _queue(name: str, exchange_name: str):
    exchange = Exchange(exchange_name, type="topic", durable=True)
    return Queue(name, exchange=exchange, routing_key="#", durable=True, queue_arguments=ORDERED)


def _stop_flag():
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop.is_set


def intake(queue: str, exchange: str) -> None:
    app = build_app()
    consume(app, should_stop=_stop_flag(), queue=_queue(queue, exchange))


def raw_intake(queue: str, exchange: str, count: int, out: str) -> None:
    seen = {"count": 0, "first": 0.0, "last": 0.0}

    def on_message(message) -> None:
        now = time.time()
        if not seen["count"]:
            seen["first"] = now
        seen["count"] += 1
        seen["last"] = now
        message.ack()

    with Connection(settings_from_env().intake_url) as connection:
        with Consumer(connection.channel(), queues=[_queue(queue, exchange)], on_message=on_message,
                      prefetch_count=64):
            deadline = time.monotonic() + 300
            while seen["count"] < count and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=1)
                except TimeoutError:
                    pass
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(seen, handle)


def noop_http(port: int, threads: int, workers: int) -> None:
    """A WSGI app answering ``{}`` under the server ``disputes api --workers`` uses, same settings."""

    def app(environ, start_response):
        if environ.get("CONTENT_LENGTH"):
            environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]

    serve_processes(lambda: app, "127.0.0.1", port, workers=workers, threads=threads)


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "intake":
        intake(args[0], args[1])
    elif kind == "raw-intake":
        raw_intake(args[0], args[1], int(args[2]), args[3])
    elif kind == "noop-http":
        noop_http(int(args[0]), int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown process kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
