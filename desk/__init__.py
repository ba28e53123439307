"""The HTTP desk and API (SPEC §6), built from the composition root's `App`.

`create_api(app)` returns the Flask application; `desk.server.serve` runs it
under waitress. What the desk shows is read by `models.views` (the ticket, its SLA,
the floor), which the CLI reads too; the desk adds HTTP: authentication,
the routes (`desk.routes`), the pages (`desk.web`), `/metrics`.
"""
from __future__ import annotations

from desk.app import create_api

__all__ = ["create_api"]
