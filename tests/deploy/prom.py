"""Helpers of the deploy/ tests: the Prometheus binaries, what the rules file names, a
time-compressed copy of the rules for the end-to-end test, and a Prometheus server of a test's own.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
KUBERNETES = DEPLOY / "kubernetes"
DEPLOY_README = DEPLOY / "README.md"

#: PromQL words that are neither metrics nor functions (a function is a word followed by "(").
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                      "bool", "offset", "inf", "nan"})
#: Metrics Prometheus makes itself for every target.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def need_binary(name: str) -> str:
    """The path of `name` (Debian's ``prometheus`` package ships prometheus and promtool), else a
    skip — or a failure when ``OP_REQUIRE_SERVERS=1`` (CI installs the package)."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found:
        return found
    why = f"{name} not found (Debian: apt-get install prometheus)"
    if os.environ.get("OP_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{why}, and OP_REQUIRE_SERVERS=1", pytrace=False)
    pytest.skip(why)


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every rule of the file, each with its group's name under ``group``."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [{**rule, "group": group["name"]} for group in data["groups"] for rule in group["rules"]]


def _without_matchers(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\boffset\s+[0-9a-z]+", "", expr)
    return re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (words that are not functions or keywords)."""
    bare = _without_matchers(expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        word = match.group()
        if word.lower() in KEYWORDS or bare[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``name{label op "value", ...}`` selectors of `expr`: (name, [(label, op, value)])."""
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        matchers = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', match.group(2))
        found.append((match.group(1), matchers))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by (…)``, ``on (…)``, ``without (…)``, ``ignoring (…)``."""
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    return labels


# --- time compression ---------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


def seconds(duration: str) -> float:
    return sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def _shrunk(duration: str, factor: float, floor: int) -> str:
    return f"{max(floor, round(seconds(duration) / factor))}s"


def compressed(rules_text: str, factor: float = 12, floor: int = 3) -> str:
    """The rules file with every duration — each ``for:``, range, subquery step and offset —
    divided by `factor` (at least `floor` seconds, so a range holds several 1 s scrapes): an
    alert that needs minutes fires in seconds. Thresholds are left as they are."""
    data = yaml.safe_load(rules_text)
    for group in data["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = _shrunk(rule["for"], factor, floor)

            def range_(match: re.Match) -> str:
                parts = match.group(1).split(":")
                return "[" + ":".join(_shrunk(p, factor, 1 if i else floor) if p else p
                                      for i, p in enumerate(parts)) + "]"
            expr = re.sub(r"\[([^\]]+)\]", range_, rule["expr"])
            rule["expr"] = re.sub(r"\boffset\s+(" + _DURATION.pattern + ")",
                                  lambda m: f"offset {_shrunk(m.group(1), factor, floor)}", expr)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# --- a Prometheus server of the test's own --------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """``prometheus`` on 127.0.0.1 on a free port, with its own storage under `where`, scraping
    `target` every second and evaluating `rules_text` every second. Stop it with `stop`."""

    def __init__(self, binary: str, where: Path, target: str, rules_text: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.where, self.port = where, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (where / "rules.yml").write_text(rules_text, encoding="utf-8")
        # The example configuration, with the test's target and one-second intervals.
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(where / "rules.yml")]
        config.pop("alerting", None)
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        (where / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.log = where / "prometheus.log"
        with open(self.log, "wb") as handle:
            self.popen = subprocess.Popen(
                [binary, f"--config.file={where / 'prometheus.yml'}", f"--storage.tsdb.path={where / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return f"----- prometheus (exit {self.popen.poll()}) -----\n" + "\n".join(text[-lines:])

    def get(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        assert self.popen.poll() is None, f"prometheus exited\n{self.tail()}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        return self.get("/api/v1/query", query=promql)["result"]

    def alerts(self, state: str | None = None) -> list[dict]:
        """Active alerts (pending and firing), or those in `state`."""
        found = self.get("/api/v1/alerts")["alerts"]
        return [a for a in found if state is None or a["state"] == state]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
