"""Serving the API with waitress: a pure-Python WSGI server, the same on every platform.

``disputes api`` and ``disputes run`` call `serve`; threads are the unit of
concurrency (each request takes a pooled database connection for its
duration), so more API capacity is more processes behind a load balancer.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from desk import create_api

if TYPE_CHECKING:
    from disputes.wiring import App

log = logging.getLogger("disputes.api")

#: Worker threads per API process.
THREADS = 8


def serve(app: "App", host: str | None = None, port: int | None = None, *, threads: int = THREADS) -> None:
    """Serve the API until interrupted (defaults: ``OP_API_HOST``/``OP_API_PORT``)."""
    import waitress

    host = host or app.settings.api_host
    port = app.settings.api_port if port is None else port
    log.info("API listening on http://%s:%s/ (%d threads)", host, port, threads)
    waitress.serve(create_api(app), host=host, port=port, threads=threads, ident="disputes")
