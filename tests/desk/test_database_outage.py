"""While the database is unreachable every request is answered 503 at once (never a traceback, never
a hang), and the API's log says so once when the outage begins and once when it ends — not once per
request, which at a few hundred requests a second buries everything else."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from disputes.wiring import App


def _ask(client: FlaskClient) -> int:
    # An unknown token: the API must ask the database who it is (no cache can answer).
    return client.get("/me/tickets", headers={"Authorization": f"Bearer {uuid.uuid4().hex}"}).status_code


def test_a_database_outage_is_answered_503_and_logged_once_with_its_end(
        app: App, client: FlaskClient, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_file = tmp_path / "t.db"
    assert _ask(client) == 401  # the database answers: an unknown token
    app.db.close()
    db_file.rename(tmp_path / "away.db")  # the tables are gone: every statement fails
    try:
        statuses = [_ask(client) for _ in range(20)]
    finally:
        app.db.close()
        db_file.unlink(missing_ok=True)
        (tmp_path / "away.db").rename(db_file)
    assert statuses == [503] * 20
    assert _ask(client) == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "disputes.api" and r.levelname == "WARNING"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unreachable: OperationalError")
    assert lines[1].startswith("database reachable again after 20 failures over ")
