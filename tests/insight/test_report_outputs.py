"""The report's forms: tables, JSON for other systems, PNG charts and one self-contained HTML page."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from disputes.cli import main
from policy import Policy
from tools.report import build_report, render_report, write_report
from tools.report.charts import CHARTS, chart_png

from .conftest import NOW

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def report(seeded, report_policy: Policy) -> dict:
    return build_report(policy=report_policy, now=NOW)


@pytest.fixture()
def empty(seeded_db, report_policy: Policy) -> dict:
    return build_report(policy=report_policy, now=NOW)


def test_the_tables_show_the_new_sections(report: dict) -> None:
    out = io.StringIO()
    render_report(report, Console(file=out, width=160), "table")
    text = out.getvalue()
    for heading in ("Top merchants by merchant-liable disputes", "Option usage per stage", "Agents per stage",
                    "Evidence asked for, per category", "Time per stage visit and phase"):
        assert heading in text
    assert "130.00 CNY" in text and "4.00 / 5" in text


def test_json_goes_to_a_file_with_integer_money(report: dict, tmp_path: Path) -> None:
    [path] = write_report(report, "json", tmp_path / "r.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == report and data["money"]["refund_deducted"]["CNY"] == 13_000


def test_png_writes_one_page_of_every_chart(report: dict, tmp_path: Path) -> None:
    [path] = write_report(report, "png", tmp_path / "report.png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 50_000


def test_png_into_a_directory_writes_one_file_per_chart(report: dict, tmp_path: Path) -> None:
    written = write_report(report, "png", str(tmp_path / "charts") + "/")
    assert sorted(p.name for p in written) == sorted(f"report-{key}.png" for key in CHARTS)
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written)


def test_html_is_one_self_contained_page_with_charts_as_data_uris_and_the_tables(report: dict,
                                                                                  tmp_path: Path) -> None:
    [path] = write_report(report, "html", tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == len(CHARTS)
    assert "<table>" in page and "m1" in page and "Option usage per stage" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere


def test_every_chart_draws_an_empty_window_without_failing(empty: dict) -> None:
    for key in CHARTS:
        assert chart_png(empty, key).startswith(PNG_MAGIC)


def test_the_report_command_writes_each_format(seeded, tmp_path: Path) -> None:
    env = {"OP_DATABASE_URL": f"sqlite:///{tmp_path}/insight.db", "OP_BROKER_URL": "memory://",
           "OP_INTAKE_URL": "memory://"}
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--format", "json", "--since", "2026-11-23"], env=env,
                           catch_exceptions=False)
    assert json.loads(result.stdout)["tickets"]["total"] == 5
    result = runner.invoke(main, ["report", "--until", "2026-11-24", "--output", str(tmp_path / "r.txt")], env=env)
    assert result.exit_code == 0 and "Tickets: 3, 0 open" in (tmp_path / "r.txt").read_text(encoding="utf-8")
    assert f"wrote {tmp_path / 'r.txt'}" in result.output
    result = runner.invoke(main, ["report", "--since", "yesterday"], env=env)
    assert result.exit_code != 0 and "not an ISO date" in result.output and "Traceback" not in result.output
