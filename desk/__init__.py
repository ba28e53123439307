"""The HTTP desk and API (SPEC §6), built from the composition root's `App`.

`create_api(app)` returns the Flask application; `desk.server.serve` runs it
under waitress. The domain work lives in modules that do not import Flask
(`ticket_view`, `sla`, `claims`, `actions`, `metrics`, `probes`), so the CLI
(``disputes ticket show --json`` uses `models.views.ticket.ticket_json`) and tests
reuse it without a web stack; importing this package stays just as light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import flask

    from disputes.wiring import App

__all__ = ["create_api"]


def create_api(app: "App") -> "flask.Flask":
    """The Flask application of the API for `app`: every route of SPEC §6, ``/openapi.json``,
    bearer authentication and the ``{"error": ...}`` shape for every refusal."""
    from desk.app import build_flask_app
    return build_flask_app(app)
