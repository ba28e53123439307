"""README "Upstream in five minutes", run as written: its Node.js publisher (amqplib, not kombu)
sends its example complaint to RabbitMQ, and the intake admits it — so the wire an upstream team
sees in the README is the wire the system reads."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from kombu import Connection

from messages import SIGNATURE_HEADER, verify
from tests.integration.conftest import need
from tests.integration.test_hostile_intake import _rabbitmqctl

pytestmark = pytest.mark.servers

README = Path(__file__).resolve().parents[2] / "README.md"
#: npm's download of amqplib, kept between runs (the suite must not fetch it every time).
NODE_CACHE = Path.home() / ".cache" / "disputes-tests" / "node-amqplib"


def section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {name}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def fenced(text: str, language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if containing in b]
    assert found, f"README has no {language} block with {containing!r}"
    return found[0]


@pytest.fixture(scope="module")
def amqplib() -> Path:
    """A folder where ``require("amqplib")`` works."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed: the README's Node.js publisher cannot run here")
    if not (NODE_CACHE / "node_modules" / "amqplib").is_dir():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "amqplib@0"],
                              cwd=NODE_CACHE, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            pytest.skip(f"npm could not install amqplib (no registry here?): {done.stderr[-300:]}")
    return NODE_CACHE


@pytest.fixture
def vhost_url() -> Iterator[str]:
    need(5672, "RabbitMQ")
    vhost = f"disputes-node-{uuid.uuid4().hex[:8]}"
    if not (_rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        pytest.skip("needs rabbitmqctl for a private vhost")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def test_the_readmes_node_publisher_sends_its_complaint_and_the_intake_admits_it(amqplib, vhost_url, app) -> None:
    upstream = section("Upstream in five minutes")
    script = fenced(upstream, "js", 'require("amqplib")')
    shell = fenced(upstream, "sh", "complaint.json")
    complaint = re.search(r"<<'JSON'\n(.*?)\nJSON\n", shell, flags=re.S).group(1)
    (amqplib / "publish.js").write_text(script, encoding="utf-8")
    # The intake's queue exists before the publish (`disputes init`), so nothing is dropped
    from workers.intake import declare_topology
    with Connection(vhost_url) as connection:
        queue = declare_topology(connection)
    env = {**os.environ, "OP_INTAKE_URL": vhost_url, "OP_SECRET": "node-s3cret"}
    done = subprocess.run(["node", "publish.js", "complaint.submitted"], input=complaint.encode(), cwd=amqplib,
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-500:]
    message_id = done.stdout.decode().strip()

    with Connection(vhost_url) as connection:
        message = queue(connection.channel()).get(no_ack=True)
    assert message is not None, "the Node.js publish did not reach the intake queue"
    raw = message.body if isinstance(message.body, bytes) else message.body.encode("utf-8")
    assert message.properties["message_id"] == message_id and message.properties["delivery_mode"] == 2
    assert raw == complaint.encode() and verify("node-s3cret", raw, message.headers[SIGNATURE_HEADER])
    # And the intake, holding the source's secret, admits it as the ticket the README shows
    from dataclasses import replace

    from models.ticket import Ticket
    from workers.intake import Intake
    source = json.loads(raw)["source"]
    app.policy = replace(app.policy, intake_secrets={source: "node-s3cret"})
    admitted = Intake(app).admit(message.delivery_info["routing_key"], raw, message_id, message.headers)
    assert admitted.status == "admitted", admitted.reasons
    assert Ticket.get_by_id(admitted.ticket_id).external_ref == "RMA-10001"
