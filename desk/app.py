"""The Flask application: OpenAPI, the error shape, authentication, a connection per request.

Everything is wired explicitly here — flask-smorest's `Api` with our error
schema and handlers, the bearer-token hook, per-request database connections
— and one blueprint per audience is registered (`desk.routes`).
"""
from __future__ import annotations

import logging
import threading
import time

import flask
import peewee
from flask import g, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from desk.auth import CACHE_KEY, TokenCache, authenticate_request
from desk.errors import ApiError, from_http_exception, internal_error
from desk.routes.agents import agents_blueprint
from desk.routes.ops import ops_blueprint
from desk.routes.tickets import tickets_blueprint
from desk.schemas import ErrorSchema
from desk.web import mount_web
from disputes.wiring import App
from models.base import database
from models.outage import Outage


log = logging.getLogger("disputes.api")
#: Where an API keeps its view of its database (an `Outage`): every request of an outage fails with a
#: 503 the client sees, and the log says so once when it begins and once when it ends.
OUTAGE_KEY = "disputes.database_outage"

#: A request taking this long is logged at INFO even when it succeeded.
SLOW_REQUEST_MS = 500.0

#: Endpoints that manage their own database access, on threads they wait on within a deadline: a
#: health check must report a dead database, and a scrape must answer without it (the request's thread
#: would wait on a hung database's connection for as long as the driver does).
_NO_DB_ENDPOINTS = frozenset({"ops.health", "ops.metrics", "api-docs.openapi_json"})


#: Threads of a server kept out of the database gate's reach (``/health``, ``/metrics``, refusals).
FREE_THREADS = 2
#: How long a request waits for a turn at the database before it is told 503 (and frees its thread).
GATE_WAIT = 0.5


class DatabaseGate:
    """At most `slots` requests at the database at once: the bulkhead between a database that stops
    answering and the rest of the server.

    When packets to the database vanish, every request on it hangs until the connection gives up
    (seconds: `disputes.wiring.POSTGRES_CONNECTION`), and a server whose threads all hang answers
    nothing — not even the ``/health`` that would say why. With `slots` below the server's threads,
    the hung requests pin those slots only; a request that finds none free within `GATE_WAIT` is
    answered 503 at once, and the remaining threads keep serving the probes (which ask the database
    on threads of their own, within their deadline)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    def enter(self) -> bool:
        return self._free.acquire(timeout=GATE_WAIT)

    def leave(self) -> None:
        self._free.release()


class DisputesApi(Api):
    """flask-smorest's Api, with our error shape documented and served for every HTTP error."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> flask.Response:  # type: ignore[override]
        return error_response(from_http_exception(error))


def error_response(error: ApiError) -> flask.Response:
    """The JSON response of an `ApiError` (401s also name the scheme, as RFC 6750 asks)."""
    response = flask.jsonify(error.body())
    response.status_code = error.status
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="disputes"'
    return response


def build_flask_app(app: App, threads: int | None = None) -> flask.Flask:
    """The Flask application serving the desk's API for `app` (see `desk.create_api`); `threads`, the
    server's threads per process, sizes the database gate (none without it, as under a test client)."""
    api_app = flask.Flask("desk", static_folder=None)  # the pages serve their assets under /desk/static
    api_app.config.update(
        API_TITLE="disputes", API_VERSION="1", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"security": [{"bearerAuth": []}],
                          "info": {"description": "Dispute handling: the agent desk and the API."}},
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    api_app.json.ensure_ascii = False  # type: ignore[attr-defined]  # labels are Chinese and English
    api = DisputesApi(api_app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})

    for blueprint in (ops_blueprint(app), tickets_blueprint(app), agents_blueprint(app)):
        api.register_blueprint(blueprint)

    gate = DatabaseGate(threads - FREE_THREADS) if threads and threads > FREE_THREADS else None
    _install_hooks(api_app, gate)
    _install_error_handlers(api_app)
    api_app.extensions["disputes"] = app
    api_app.extensions[CACHE_KEY] = TokenCache()
    api_app.extensions[OUTAGE_KEY] = Outage("database", log)  # live agents by token hash, for at most a second
    mount_web(api_app, app)  # the HTML desk and dashboard (cookie sign-in): /desk/, /dashboard/
    return api_app


def _install_hooks(api_app: flask.Flask, gate: DatabaseGate | None) -> None:
    @api_app.before_request
    def open_connection() -> None:
        g.started = time.perf_counter()
        if request.endpoint not in _NO_DB_ENDPOINTS:
            if gate is not None:
                if not gate.enter():
                    raise ApiError(503, "unavailable", "the database is unavailable or busy; retry shortly")
                g.gate = gate
            database.connect(reuse_if_open=True)  # pooled on PostgreSQL
        authenticate_request(request)

    @api_app.after_request
    def log_request(response: flask.Response) -> flask.Response:
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # A refused or slow request at INFO, the others at DEBUG: a line per request cost 6 % of the
        # API's CPU (formatted as JSON and masked), for what the refused and slow ones say better.
        level = logging.INFO if response.status_code >= 400 or elapsed >= SLOW_REQUEST_MS else logging.DEBUG
        if log.isEnabledFor(level):
            agent = g.get("agent")
            # The path only: never headers (the token) nor bodies.
            log.log(level, "%s %s %s agent=%s %.1fms", request.method, request.path, response.status_code,
                    agent.id if agent is not None else "-", elapsed)
        return response

    @api_app.teardown_request
    def close_connection(exc: BaseException | None) -> None:
        entered = g.pop("gate", None)
        if entered is not None:
            entered.leave()
        if database.is_closed():
            return
        if exc is None and g.get("database_failed") is None:
            api_app.extensions[OUTAGE_KEY].answered()  # the request used its connection, nothing failed
        if database.in_transaction():  # atomic() blocks unwind themselves; this would be a bug
            log.error("a transaction was left open by %s %s; connection kept", request.method, request.path)
            return
        database.close()


def _install_error_handlers(api_app: flask.Flask) -> None:
    @api_app.errorhandler(ApiError)
    def api_error(error: ApiError) -> flask.Response:
        return error_response(error)

    @api_app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> flask.Response:
        return error_response(from_http_exception(error))

    @api_app.errorhandler(peewee.OperationalError)
    @api_app.errorhandler(peewee.InterfaceError)
    def database_unavailable(error: Exception) -> flask.Response:
        g.database_failed = True
        flask.current_app.extensions[OUTAGE_KEY].failed(error)
        return error_response(ApiError(503, "unavailable", "the database is unavailable or busy; retry shortly"))

    @api_app.errorhandler(Exception)
    def server_fault(error: Exception) -> flask.Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        return error_response(internal_error())


#: The Flask application of the API for an `App`: every route of SPEC §6, ``/openapi.json``, bearer
#: authentication and the ``{"error": ...}`` shape for every refusal.
create_api = build_flask_app
