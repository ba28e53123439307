"""The CLI contract of SPEC §7, driven as an operator would (click's runner, a temp SQLite file)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from disputes.cli import main


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"OP_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db", "OP_BROKER_URL": "memory://",
            "OP_INTAKE_URL": "memory://"}


def run(env: dict[str, str], *args: str) -> "object":
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_help_lists_every_contract_command(env: dict[str, str]) -> None:
    out = run(env, "--help").output
    for command in ("demo", "run", "init", "intake", "scheduler", "api", "agents", "policy", "ticket",
                    "report", "bench", "publish"):
        assert command in out


def test_agents_add_prints_the_token_alone_and_it_is_stored_hashed(env: dict[str, str]) -> None:
    result = run(env, "agents", "add", "--name", "alice", "--stage", "2", "--skills", "apparel", "--capacity", "5")
    token = result.stdout.strip()
    assert result.exit_code == 0 and "\n" not in token and len(token) >= 32
    listing = run(env, "agents", "list").stdout
    assert "alice" in listing and token not in listing
    assert run(env, "agents", "revoke", "alice").exit_code == 0
    assert "revoked" in run(env, "agents", "list").stdout


def test_adding_the_same_agent_twice_is_a_clear_error(env: dict[str, str]) -> None:
    run(env, "agents", "add", "--name", "bob", "--stage", "1")
    result = CliRunner().invoke(main, ["agents", "add", "--name", "bob", "--stage", "1"], env=env)
    assert result.exit_code != 0 and "already exists" in result.output and "Traceback" not in result.output


def test_policy_show_is_valid_toml_and_check_accepts_it(env: dict[str, str], tmp_path: Path) -> None:
    shown = run(env, "policy", "show").stdout
    tomllib.loads(shown)
    path = tmp_path / "p.toml"
    path.write_text(shown, encoding="utf-8")
    assert run(env, "policy", "check", str(path)).exit_code == 0


def test_policy_check_lists_every_problem_and_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[deadlines]\nevidence = "3x"\n[evidence]\nmax_rounds = -1\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["policy", "check", str(path)], env=env)
    assert result.exit_code == 1
    assert "deadlines.evidence" in result.output and "max_rounds" in result.output
    assert "Traceback" not in result.output


def test_a_bad_policy_in_the_environment_stops_start_up_with_every_problem(env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[deadlines]\nevidence = "soon"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["init"], env={**env, "OP_POLICY": str(path)})
    assert result.exit_code == 1 and "deadlines.evidence" in result.output


def test_intake_rejected_lists_a_refused_message_and_replay_redrives_it(env: dict[str, str]) -> None:
    from disputes.settings import Settings
    from disputes.wiring import build_app
    from models import init_schema
    from workers.intake import Intake

    run(env, "init")
    app = build_app(Settings(database_url=env["OP_DATABASE_URL"]))
    init_schema()
    admission = Intake(app).admit("complaint.submitted", b"not json at all", "m-1")
    listing = run(env, "intake", "rejected").stdout
    assert str(admission.rejected_id) in listing and "not valid JSON" in listing
    replay = CliRunner().invoke(main, ["intake", "replay", str(admission.rejected_id)], env=env)
    assert replay.exit_code == 1 and "still rejected" in replay.output


def test_intake_held_lists_a_follow_up_waiting_for_its_complaint(env: dict[str, str]) -> None:
    import json as _json

    from disputes.settings import Settings
    from disputes.wiring import build_app
    from models import init_schema
    from workers.intake import Intake

    run(env, "init")
    app = build_app(Settings(database_url=env["OP_DATABASE_URL"]))
    init_schema()
    body = {"schema_version": 1, "party": "merchant", "source": "shop", "external_ref": "EARLY-1",
            "items": [{"kind": "photo", "uri": "https://files.example/e1.jpg"}]}
    assert Intake(app).admit("evidence.submitted", _json.dumps(body).encode(), "e-1").status == "held"
    listing = run(env, "intake", "held").stdout
    assert "evidence.submitted" in listing and "e-1" in listing and "shop/EARLY-1" in listing
    assert listing.count(" +08:00") == 2  # received, and rejected unless its complaint comes: both zoned


def test_ticket_show_prints_the_history_by_id_and_by_reference(env: dict[str, str]) -> None:
    import json as _json

    from disputes.settings import Settings
    from disputes.wiring import build_app
    from models import init_schema
    from workers.intake import Intake

    run(env, "init")
    app = build_app(Settings(database_url=env["OP_DATABASE_URL"]))
    init_schema()
    body = {"schema_version": 1, "source": "shop", "external_ref": "R-1", "channel": "app",
            "order": {"order_id": "O-1", "amount": 1000, "currency": "CNY", "category": "apparel",
                      "delivery": "platform", "status": "delivered"},
            "user_id": "u1", "merchant_id": "m1", "dispute_type": "quality", "claimed_amount": 500,
            "description": "torn", "negotiation": "failed", "occurred_at": "2026-11-20T10:00:00+08:00"}
    ticket_id = Intake(app).admit("complaint.submitted", _json.dumps(body).encode(), "m-1").ticket_id
    shown = run(env, "ticket", "show", "shop:R-1").stdout
    assert "awaiting_takeover" in shown and "submit" in shown
    document = _json.loads(run(env, "ticket", "show", str(ticket_id), "--json").stdout)
    assert document["state"] == "awaiting_takeover" and document["history"][0]["from_state"] is None
    missing = CliRunner().invoke(main, ["ticket", "show", "shop:nope"], env=env)
    assert missing.exit_code != 0 and "no ticket" in missing.output


def test_ledger_prints_the_books_and_reports_every_invariant_holding(env: dict[str, str]) -> None:
    from disputes.settings import Settings
    from disputes.wiring import build_app
    from models import init_schema
    from workers.intake import Intake

    run(env, "init")
    app = build_app(Settings(database_url=env["OP_DATABASE_URL"]))
    init_schema()
    Intake(app).admit("merchant.balance_changed",
                      b'{"schema_version": 1, "merchant_id": "m7", "balance": 12345, "currency": "CNY"}', "b-1")
    result = run(env, "ledger")
    assert result.exit_code == 0
    assert "m7" in result.stdout and "123.45" in result.stdout and "every invariant holds" in result.stdout


def test_ticket_show_reads_whole_at_80_columns_with_zoned_times_and_money_in_major_units(
        env: dict[str, str]) -> None:
    import json as _json
    import re

    from disputes.settings import Settings
    from disputes.wiring import build_app
    from models import init_schema
    from models.agent import Agent
    from models.change import Actor, Role
    from models.workflow import apply
    from workers.intake import Intake

    run(env, "init")
    app = build_app(Settings(database_url=env["OP_DATABASE_URL"]))
    init_schema()
    body = {"schema_version": 1, "source": "shop", "external_ref": "R-80", "channel": "app",
            "order": {"order_id": "O-80", "amount": 1000, "currency": "CNY", "category": "apparel",
                      "delivery": "platform", "status": "delivered"},
            "user_id": "u1", "merchant_id": "m1", "dispute_type": "not_as_described", "claimed_amount": 500,
            "description": "torn", "negotiation": "failed", "occurred_at": "2026-11-20T10:00:00+08:00"}
    ticket_id = Intake(app).admit("complaint.submitted", _json.dumps(body).encode(), "m-80").ticket_id
    first, second = Agent.create(name="a1", stage=1, token_hash="x1"), Agent.create(name="a2", stage=2, token_hash="x2")
    stage1 = {"dispute_status": "not_reconciled", "category": "apparel"}
    apply(ticket_id, "take_over", Actor.agent(1, first.id), {}, app.policy)
    apply(ticket_id, "request_evidence", Actor.agent(1, first.id), {**stage1, "from": "both", "items": ["photo"]},
          app.policy)
    apply(ticket_id, "evidence_deadline", Actor(Role.SCHEDULER), {}, app.policy)
    apply(ticket_id, "claim", Actor.agent(2, second.id), {}, app.policy)
    apply(ticket_id, "to_judgment", Actor.agent(2, second.id), {}, app.policy,
          qc={"verdict": "flag", "reason_code": "unnecessary_evidence_request"})

    shown = run({**env, "COLUMNS": "80"}, "ticket", "show", "shop:R-80").stdout
    lines = shown.splitlines()
    # Nothing is cut off at 80 columns: every line fits, no ellipsis, every state and action whole
    assert max(len(line) for line in lines) <= 80, shown
    assert "…" not in shown
    assert re.search(r"waiting on \w+", shown), shown  # never split as "waiting on" / "merchant"
    for word in ("awaiting_takeover", "awaiting_evidence", "request_evidence", "evidence_deadline", "to_judgment",
                 "stage3", "unnecessary_evidenc"):
        assert word in shown, (word, shown)
    # Every time says its zone: the policy calendar's, as the desk shows it
    times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?(?: [+-]\d\d:\d\d)?", shown)
    assert len(times) >= 7 and all(t.endswith(" +08:00") for t in times), times
    assert "Asia/Shanghai" in shown
    # Money in major units with its currency (the wire's 500 and 1000 are fen)
    assert "claimed 5.00 CNY of 10.00 CNY" in shown
    assert not re.search(r"\b(500|1000) CNY", shown)
    # The JSON is the API's document: minor units and ISO 8601 times, as before
    document = _json.loads(run(env, "ticket", "show", str(ticket_id), "--json").stdout)
    assert (document["amounts"]["claimed"], document["amounts"]["order"]) == (500, 1000)
    assert "T" in document["history"][0]["at"]


def test_init_and_run_help_name_the_environment_they_read(env: dict[str, str]) -> None:
    import inspect
    import re

    from disputes import settings

    read = set(re.findall(r'"(OP_[A-Z_]+)"', inspect.getsource(settings.settings_from_env)))
    assert {"OP_DATABASE_URL", "OP_BROKER_URL", "OP_INTAKE_URL", "OP_POLICY"} <= read
    run_help = run({**env, "COLUMNS": "80"}, "run", "--help").output
    assert sorted(name for name in read if name not in run_help) == [], run_help
    init_help = run({**env, "COLUMNS": "80"}, "init", "--help").output
    for name in ("OP_DATABASE_URL", "OP_INTAKE_URL", "OP_POLICY"):
        assert name in init_help, init_help
    assert "Environment:" in init_help and "Environment:" in run_help


def _every_help(command, path: tuple[str, ...] = ()) -> "list[tuple[str, str]]":
    import click

    ctx = click.Context(command, info_name=" ".join(("disputes",) + path))
    found = [(" ".join(path), command.get_help(ctx))]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                found += _every_help(sub, path + (name,))
    return found


def test_no_help_text_speaks_of_internal_issue_numbers() -> None:
    import re

    texts = _every_help(main)
    assert len(texts) > 20
    mentions = [(name, m.group(0)) for name, text in texts for m in re.finditer(r"\b[Ii]ssue #?\d+", text)]
    assert mentions == []
