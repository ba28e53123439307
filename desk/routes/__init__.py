"""The HTTP routes, one blueprint per audience: `ops` (probes), `tickets`, `agents` (me, options).

Each module exposes a factory taking the `App`, so the views close over the
composition root's objects instead of reaching for globals.
"""
from __future__ import annotations

import http
import json
from typing import Any, Callable, TypeVar

import flask
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser

from desk.schemas import ErrorSchema


class BodyParser(FlaskParser):
    """webargs' parser, but a body nested too deeply for ``json`` is bad JSON (400), not a 500."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "<body>", 0) from None


class DeskBlueprint(Blueprint):
    """The blueprint every route module uses (our body parser)."""

    ARGUMENTS_PARSER = BodyParser()


View = TypeVar("View", bound=Callable[..., object])


def as_json(body: object, status: int = 200) -> flask.Response:
    """`body` serialized once, as it is. For the hot routes whose bodies are built JSON-ready in
    exactly the documented shape (`models.views.ticket`), flask-smorest's ``Schema.dump`` pass would
    only copy them field by field; the route keeps its ``@blp.response`` schema for ``/openapi.json``
    (and ``tests/desk/test_read_routes.py`` checks the body is what the schema would dump)."""
    response = flask.jsonify(body)
    response.status_code = status
    return response


def refusals(blp: Blueprint, *statuses: int) -> Callable[[View], View]:
    """Document the error responses a route can give (all in the `ErrorSchema` shape)."""
    def decorator(func: View) -> View:
        for status in statuses:
            func = blp.alt_response(status, schema=ErrorSchema, description=http.HTTPStatus(status).phrase)(func)
        return func
    return decorator
