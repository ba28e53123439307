"""``disputes bench --quick``: every benchmark runs on the servers and produces its table and JSON.

The targets are not asserted here (the quick sizes are too small to mean anything); the full
figures are in the README's Performance section.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.suite import BENCHMARKS

pytestmark = pytest.mark.servers


def test_the_quick_bench_prints_the_table_and_writes_the_json(servers_up: None, tmp_path: Path) -> None:
    # Given the servers, when the quick suite runs as the command an operator types
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "disputes.cli", "bench", "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=170)
    # Then it exits 0 and prints one table with a row per benchmark
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "disputes bench --quick" in done.stdout
    for name in BENCHMARKS:
        assert name in done.stdout
    # And the JSON holds every benchmark with a median, a baseline and their runs
    data = json.loads(out.read_text())
    assert data["quick"] is True and not data["failures"]
    assert set(data["benchmarks"]) == set(BENCHMARKS)
    for name, result in data["benchmarks"].items():
        headline = result["rows"][0]
        assert headline["median"] > 0 and headline["baseline"] > 0, name
        assert headline["runs"] and headline["baseline_runs"], name
        assert headline["met"] in (True, False), name


def test_an_unknown_benchmark_is_refused_with_the_names_there_are(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "disputes.cli", "bench", "--only", "nope", "--json",
                           str(tmp_path / "b.json")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no benchmark nope" in done.stderr and "pipeline" in done.stderr
