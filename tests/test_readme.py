"""The README's state table is the machine's own rendering, so the docs cannot drift."""
from pathlib import Path

from models.machine import render_markdown


def test_readme_state_table_matches_the_transition_table() -> None:
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    rendered = readme.split("<!-- state-table:start -->\n", 1)[1].split("<!-- state-table:end -->", 1)[0]
    assert rendered.strip() == render_markdown().strip(), "run `python -m models.machine` to regenerate the README table"


def test_readme_opens_with_the_two_commands() -> None:
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    head = readme.split("## Architecture", 1)[0]
    assert "pip install -e . && disputes demo" in head and "pytest" in head
