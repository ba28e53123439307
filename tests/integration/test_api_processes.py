"""``disputes api --workers N``: N API processes on one port, stopped gracefully by SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from disputes.cli import main
from tests.integration.conftest import fresh_pg_database, need

pytestmark = pytest.mark.servers


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_two_api_processes_answer_on_one_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    need(6379, "Redis")
    db_url = fresh_pg_database("disputes_test_api_processes")
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "OP_DATABASE_URL": db_url, "OP_BROKER_URL": "redis://127.0.0.1:6379/8",
           "OP_INTAKE_URL": "memory://"}
    server = subprocess.Popen([sys.executable, "-m", "disputes.cli", "api", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, health = _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()[-2000:]
                time.sleep(0.3)
        assert (status, health["database"], health["broker"]) == (200, "ok", "ok")
        # the master keeps two workers (the second may still be booting when the first answers)
        deadline = time.monotonic() + 20
        while len(_children(server.pid)) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_children(server.pid)) == 2
        for _ in range(20):
            assert _get(f"http://127.0.0.1:{port}/health")[0] == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=40) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_several_api_processes_refuse_the_in_process_broker(tmp_path: Path) -> None:
    env = {"OP_DATABASE_URL": f"sqlite:///{tmp_path}/d.db", "OP_BROKER_URL": "memory://"}
    result = CliRunner().invoke(main, ["api", "--workers", "2"], env=env)
    assert result.exit_code == 1 and "shared broker" in result.output
