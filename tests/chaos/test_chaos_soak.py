"""The chaos soak (issue 7 §1), smaller than `disputes bench chaos`: the same seeded workload
fault-free and then while stage workers, the scheduler, the intake and the API are SIGKILLed and
restarted and a private Redis and a private PostgreSQL are restarted — and every invariant holds.

Marked ``slow`` (minutes; out of the default run) and ``servers`` (RabbitMQ for a private vhost;
``redis-server``, PostgreSQL's ``initdb``/``pg_ctl`` and ``rabbitmqctl`` on this machine).
Run it with ``pytest -m slow tests/chaos``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from tools.bench.private_servers import PG_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.servers]

#: Big enough that every fault lands while tickets are in every stage; small enough for minutes.
TICKETS = int(os.environ.get("OP_CHAOS_TICKETS", "150"))


def _missing() -> list[str]:
    missing = [tool for tool in ("redis-server", "rabbitmqctl") if shutil.which(tool) is None]
    if not list(PG_ROOT.glob("*/bin/initdb")) and shutil.which("initdb") is None:
        missing.append("initdb")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        missing.append("RabbitMQ on 127.0.0.1:5672")
    return missing


@pytest.fixture
def tools() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("OP_REQUIRE_SERVERS") == "1":
            pytest.fail(f"the chaos soak needs {', '.join(missing)} (OP_REQUIRE_SERVERS=1)")
        pytest.skip(f"the chaos soak needs {', '.join(missing)}")


def test_no_ticket_and_no_cent_is_lost_when_processes_are_killed_and_servers_restarted(
        tools: None, tmp_path: Path) -> None:
    from rich.console import Console

    from tools.bench.chaos import run_chaos

    out = tmp_path / "chaos.json"
    data = run_chaos(seed=11, tickets=TICKETS, json_path=out, console=Console(width=160))

    failed = [c for c in data["checks"] if not c["ok"]]
    assert not failed, json.dumps(failed, indent=2)
    faults = {f"{f['what']} {f['target']}" for f in data["faults"]}
    assert "redis restart private redis" in faults and "postgres restart private postgres" in faults
    assert {"SIGKILL disputes scheduler", "SIGKILL disputes intake", "SIGKILL disputes api"} <= faults
    assert any(f.startswith("SIGKILL dramatiq workers.") for f in faults)
    assert data["figures"]["under_faults"]["final states"] == data["figures"]["fault_free"]["final states"]
    assert json.loads(out.read_text())["ok"] is True
