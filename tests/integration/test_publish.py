"""``disputes publish`` (SPEC §7): one intake message on RabbitMQ, as an upstream system sends it —
a fresh message id printed, signed when the policy holds its source's secret — that the intake
then admits."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import tomli_w
from click.testing import CliRunner
from kombu import Connection

from disputes.cli import main
from messages import SIGNATURE_HEADER, verify
from tests.conftest import complaint_body
from tests.integration.test_hostile_intake import _rabbitmqctl
from tests.integration.conftest import need

pytestmark = pytest.mark.servers

SECRET = "publish-s3cret"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of an upstream team's shell: a private vhost, a policy with a secret for ``shop``."""
    need(5672, "RabbitMQ")
    vhost = f"disputes-publish-{uuid.uuid4().hex[:8]}"
    if not (_rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        pytest.skip("needs rabbitmqctl for a private vhost")
    from policy import default_policy_dict
    data = default_policy_dict()
    data["intake"] = {"secrets": {"shop": SECRET}}
    policy = tmp_path / "policy.toml"
    policy.write_text(tomli_w.dumps(data), encoding="utf-8")
    try:
        yield {"OP_INTAKE_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}", "OP_POLICY": str(policy),
               "OP_DATABASE_URL": f"sqlite:///{tmp_path}/publish.db"}
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def take_one(env: dict[str, str]):
    from workers.intake import intake_queue
    with Connection(env["OP_INTAKE_URL"]) as connection:
        message = intake_queue(connection.channel()).get(no_ack=True)
        assert message is not None, "nothing reached the intake queue"
        raw = message.body if isinstance(message.body, bytes) else message.body.encode("utf-8")
        return message.delivery_info["routing_key"], raw, message.properties, message.headers


def test_a_complaint_from_a_file_arrives_signed_under_the_printed_message_id_and_is_admitted(
        broker, tmp_path: Path, app) -> None:
    body = complaint_body(source="shop", external_ref="PUB-1")
    path = tmp_path / "complaint.json"
    path.write_text(json.dumps(body, indent=2), encoding="utf-8")
    result = CliRunner().invoke(main, ["publish", "complaint.submitted", str(path)], env=broker)
    assert result.exit_code == 0, result.output
    message_id = result.stdout.strip()
    assert len(message_id) == 32 and "signed for source shop" in result.stderr

    routing_key, raw, properties, headers = take_one(broker)
    assert (routing_key, properties["message_id"], properties["delivery_mode"]) == ("complaint.submitted", message_id, 2)
    assert json.loads(raw) == body and verify(SECRET, raw, headers[SIGNATURE_HEADER])
    # And the intake, holding the same secret, admits it as a new ticket
    from dataclasses import replace

    from models.base import database
    from workers.intake import Intake
    database.initialize(app.db)  # the command bound the models to its own (unused) database
    app.policy = replace(app.policy, intake_secrets={"shop": SECRET})
    assert Intake(app).admit(routing_key, raw, message_id, headers).status == "admitted"


def test_a_follow_up_from_standard_input_gets_a_fresh_id_each_time(broker) -> None:
    body = json.dumps({"schema_version": 1, "ticket_id": 7, "user_id": "u1"})
    ids = [CliRunner().invoke(main, ["publish", "customer.withdrew"], input=body, env=broker).stdout.strip()
           for _ in range(2)]
    assert ids[0] != ids[1] and all(len(i) == 32 for i in ids)
    routing_key, raw, properties, headers = take_one(broker)
    assert routing_key == "customer.withdrew" and SIGNATURE_HEADER not in (headers or {})  # no source: unsigned


def test_a_body_that_breaks_the_contract_is_refused_naming_each_field_and_nothing_is_sent(broker) -> None:
    result = CliRunner().invoke(main, ["publish", "complaint.submitted"], input='{"schema_version": 1, '
                                '"claimed_amount": 1.5}', env=broker)
    assert result.exit_code == 1
    assert "claimed_amount" in result.output and "merchant_id" in result.output and "Traceback" not in result.output
    with Connection(broker["OP_INTAKE_URL"]) as connection:
        from workers.intake import declare_topology
        queue = declare_topology(connection)
        assert queue(connection.channel()).get(no_ack=True) is None
