"""The agent desk (``/desk/``) and the supervisor dashboard (``/dashboard/``): server-rendered pages.

The pages are their own small Flask application, mounted in front of the
JSON API by `mount_web` rather than registered on it, because the two
authenticate and fail differently: the API wants ``Authorization: Bearer`` and
answers every refusal in the ``{"error": …}`` shape, while a browser carries
the token in a cookie, needs CSRF tokens on its forms, and should see an HTML
page or a redirect to sign in. Everything the pages decide goes through the
API's own domain code (`desk.claims`, `desk.actions`, `models.views.ticket`), so
a click and an API call are checked alike. No build step: Jinja templates in
``desk/templates``, one stylesheet and one small script in ``desk/static``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterable

import flask
import peewee
from flask import g, request
from werkzeug.exceptions import HTTPException

from desk.errors import ApiError
from desk.web import format as fmt
from desk.web.dashboard import dashboard_blueprint
from desk.web.i18n import ACTION_LABELS, DISPUTE_TYPES, STATE_LABELS, WORDS, choose_language, label, word
from desk.web.pages import desk_blueprint
from desk.web.ticket_page import option_labels
from disputes.wiring import App
from models.base import database
from models.states import stage_of


__all__ = ["build_web_app", "mount_web", "WEB_PREFIXES"]

log = logging.getLogger("disputes.desk")

#: The paths the pages answer (and ``/``, which sends a browser to the desk); everything else is the API's.
WEB_PREFIXES: tuple[str, ...] = ("/desk", "/dashboard")
_PACKAGE = Path(__file__).resolve().parent.parent


def build_web_app(app: App) -> flask.Flask:
    """The Flask application of the desk and dashboard pages for `app`."""
    web = flask.Flask("desk.web", root_path=str(_PACKAGE), template_folder="templates",
                      static_folder="static", static_url_path="/desk/static")
    web.config.update(MAX_CONTENT_LENGTH=64 * 1024, TEMPLATES_AUTO_RELOAD=False)
    web.extensions["disputes"] = app
    web.register_blueprint(desk_blueprint(app))
    web.register_blueprint(dashboard_blueprint(app))
    # ``GET /``: the address `disputes api` and `disputes run` print at start-up; a person opening it
    # wants the desk (which sends a stranger on to sign in).
    web.add_url_rule("/", "root", lambda: flask.redirect(flask.url_for("desk.queue")))
    _install_template_helpers(web, app)
    _install_hooks(web)
    _install_error_pages(web)
    return web


def mount_web(api_app: flask.Flask, app: App) -> flask.Flask:
    """Serve the pages in front of `api_app`: requests under `WEB_PREFIXES` go to them."""
    web = build_web_app(app)
    api_app.wsgi_app = PathDispatcher(api_app.wsgi_app, web.wsgi_app, WEB_PREFIXES)  # type: ignore[method-assign]
    api_app.extensions["disputes.web"] = web
    return web


class PathDispatcher:
    """A WSGI application sending the paths under `prefixes` to `pages`, the rest to `api`."""

    def __init__(self, api: Callable, pages: Callable, prefixes: Iterable[str]) -> None:
        self.api, self.pages, self.prefixes = api, pages, tuple(prefixes)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/":
            return self.pages(environ, start_response)
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return self.pages(environ, start_response)
        return self.api(environ, start_response)


def _install_template_helpers(web: flask.Flask, app: App) -> None:
    zone = app.policy.calendar.zone
    action_labels, choice_labels = option_labels(app.policy)

    def action_text(action: str, from_state: str | None, lang: str) -> str:
        stage = stage_of(from_state) if from_state in STATE_LABELS else None
        found = action_labels.get((stage or "", action)) or next(
            (text for (_, name), text in action_labels.items() if name == action), None)
        found = found or ACTION_LABELS.get(action)
        return label(found, lang) if found else action

    def param_text(action: str, name: str, value: object, currency: str, lang: str) -> str:
        if name == "amount" and isinstance(value, int):
            return fmt.money(value, currency, lang)
        values = value if isinstance(value, list) else [value]
        return ", ".join(label(choice_labels.get((action, name, str(v)), str(v)), lang) for v in values)

    @web.context_processor
    def helpers() -> dict[str, object]:
        lang = g.get("lang", "zh")
        session = g.get("desk")
        return {
            "agent": getattr(session, "agent", None), "csrf": getattr(session, "csrf", ""),
            "param_label": lambda name: word(f"param_{name}", lang) if f"param_{name}" in WORDS else name,
            "action_text": lambda action, from_state=None: action_text(action, from_state, lang),
            "param_text": lambda action, name, value, currency: param_text(action, name, value, currency, lang),
            "lang": lang, "other_lang": "en" if lang == "zh" else "zh",
            "t": lambda key: word(key, lang),
            "L": lambda value: label(value, lang),
            "code_label": lambda code_list, code: app.policy.label(code_list, code, lang) if code else "—",
            "state_label": lambda state: label(STATE_LABELS.get(state, state), lang),
            "type_label": lambda kind: label(DISPUTE_TYPES.get(kind, kind), lang),
            "money": lambda amount, currency: fmt.money(amount, currency, lang),
            "when": lambda value: fmt.when(value, zone),
            "countdown": lambda value: fmt.countdown(value, app.clock(), lang),
            "span": lambda seconds: fmt.span(seconds, lang),
            "is_web_link": fmt.is_web_link,
            "now": app.clock(),
            "zone": zone,
        }


def _install_hooks(web: flask.Flask) -> None:
    @web.before_request
    def open_connection() -> None:
        g.started = time.perf_counter()
        g.lang = choose_language(request)
        if request.endpoint not in ("static", "root"):
            database.connect(reuse_if_open=True)

    @web.after_request
    def finish(response: flask.Response) -> flask.Response:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        agent = getattr(g.get("desk"), "agent", None)
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # The path only: never the cookie (it holds the token) nor the form.
        log.info("%s %s %s agent=%s %.1fms", request.method, request.path, response.status_code,
                 agent.id if agent is not None else "-", elapsed)
        return response

    @web.teardown_request
    def close_connection(exc: BaseException | None) -> None:
        if not database.is_closed() and not database.in_transaction():
            database.close()


def error_page(status: int, message: str) -> flask.Response:
    response = flask.make_response(flask.render_template("error.html", status=status, message=message), status)
    return response


def _install_error_pages(web: flask.Flask) -> None:
    @web.errorhandler(ApiError)
    def api_error(error: ApiError) -> flask.Response:
        return error_page(error.status, error.message)

    @web.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> flask.Response:
        return error_page(error.code or 500, error.description or error.name)

    @web.errorhandler(peewee.OperationalError)
    @web.errorhandler(peewee.InterfaceError)
    def database_unavailable(error: Exception) -> flask.Response:
        log.warning("database unavailable: %s %s", request.method, request.path, exc_info=True)
        return error_page(503, "the database is unavailable or busy; retry shortly")

    @web.errorhandler(Exception)
    def server_fault(error: Exception) -> flask.Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        return error_page(500, "an internal error occurred; it has been logged")
