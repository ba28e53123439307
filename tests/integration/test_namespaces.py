"""Two deployments on one broker (issue: staging and production on one vhost stole each other's
complaints): each reads its own intake queue under ``OP_NAMESPACE``, keeps its stage queues apart on
a shared Redis db, and ``disputes init`` warns when the intake queue it is about to use is already
consumed for another database. RabbitMQ (a private vhost), two PostgreSQL databases, real
``disputes init`` / ``disputes intake`` / ``disputes publish`` processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import psycopg2
import pytest
from kombu import Connection

from disputes.probes import queue_depths
from disputes.settings import Settings
from disputes.wiring import make_broker
from tests.integration.conftest import PG_DSN, fresh_pg_database, need
from tests.integration.test_hostile_intake import _rabbitmqctl

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parents[2]
DISPUTES = [str(Path(sys.executable).parent / "disputes")]


def run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(DISPUTES + list(args), env=env, cwd=str(REPO), input=stdin, capture_output=True,
                          timeout=120, check=False)


def consumers(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).consumer_count)
        finally:
            channel.close()


def messages_in(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        finally:
            channel.close()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        time.sleep(0.1)


@pytest.fixture
def one_vhost_two_databases() -> Iterator[tuple[str, str, str]]:
    """A private vhost and two fresh PostgreSQL databases: production's and staging's."""
    need(5432, "PostgreSQL")
    need(5672, "RabbitMQ")
    suffix = uuid.uuid4().hex[:8]
    vhost = f"disputes-shared-{suffix}"
    if not (_rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        pytest.skip("needs rabbitmqctl for a private vhost")
    names = (f"disputes_prod_{suffix}", f"disputes_staging_{suffix}")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}", fresh_pg_database(names[0]), fresh_pg_database(names[1])
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        admin = psycopg2.connect(PG_DSN)
        admin.autocommit = True
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_init_warns_when_the_intake_queue_is_consumed_for_another_database_and_a_namespace_keeps_them_apart(
        one_vhost_two_databases, tmp_path: Path) -> None:
    from tests.conftest import complaint_body

    amqp_url, production_db, staging_db = one_vhost_two_databases
    base = {**os.environ, "OP_INTAKE_URL": amqp_url, "OP_BROKER_URL": "memory://", "PYTHONUNBUFFERED": "1"}
    base.pop("OP_NAMESPACE", None)
    production = {**base, "OP_DATABASE_URL": production_db}
    staging = {**base, "OP_DATABASE_URL": staging_db}
    # Given production initialised and its intake running on the vhost
    first = run(production, "init")
    assert first.returncode == 0, first.stderr
    assert b"its queue disputes.intake on" in first.stdout and b"warning" not in first.stderr
    with open(tmp_path / "intake.log", "wb") as log:
        intake = subprocess.Popen(DISPUTES + ["intake"], env=production, cwd=str(REPO), stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: consumers(amqp_url, "disputes.intake") == 1, 30, "production's intake consuming")
        # When production runs init again, it recognises its own consumer: no warning
        again = run(production, "init")
        assert again.returncode == 0 and b"warning" not in again.stderr, again.stderr
        assert b"1 intake consumer(s) of this database read disputes.intake" in again.stdout
        # When staging, on another database, is initialised on the same vhost without a namespace
        clash = run(staging, "init")
        # Then it is told, naming its own database (never a password), and still succeeds
        assert clash.returncode == 0
        warning = clash.stderr.decode()
        assert "warning: disputes.intake" in warning and "1 consumer(s) not registered for this database" in warning
        assert f"/{staging_db.rsplit('/', 1)[-1]}" in warning and "OP_NAMESPACE" in warning
        assert "guest:guest" not in warning + clash.stdout.decode()
        # When staging takes a namespace instead
        apart = run({**staging, "OP_NAMESPACE": "staging"}, "init")
        # Then its queue is its own, which nobody else consumes: no warning
        assert apart.returncode == 0 and b"warning" not in apart.stderr, apart.stderr
        assert b"its queue staging.disputes.intake on" in apart.stdout
        # And a complaint published on the shared op.intake reaches each deployment's queue once:
        # production's intake admits it into production's database, staging's copy waits in its own queue
        body = json.dumps(complaint_body(source="shop", external_ref="NS-1")).encode()
        sent = run({**staging, "OP_NAMESPACE": "staging"}, "publish", "complaint.submitted", stdin=body)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: _tickets(production_db) == 1, 30, "production admitted the complaint")
        assert messages_in(amqp_url, "staging.disputes.intake") == 1 and _tickets(staging_db) == 0
        assert messages_in(amqp_url, "disputes.intake") == 0
    finally:
        intake.terminate()
        intake.wait(timeout=15)
    # And once production's intake is gone, its registration goes with it
    wait_for(lambda: consumers(amqp_url, "disputes.intake") == 0, 15, "production's intake gone")
    after = run(staging, "init")
    assert after.returncode == 0 and b"warning" not in after.stderr, after.stderr


def _tickets(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[-1]
    connection = psycopg2.connect(PG_DSN.replace("dbname=test", f"dbname={name}"))
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM ticket")
            return int(cur.fetchone()[0])
    finally:
        connection.close()


def test_two_namespaces_on_one_redis_db_keep_their_stage_queues_and_depths_apart(redis_url: str) -> None:
    # Given production (no namespace) and staging brokers on the same Redis db
    production = make_broker(redis_url, redis_namespace=Settings().redis_namespace)
    staging = make_broker(redis_url, redis_namespace=Settings(namespace="staging").redis_namespace)
    try:
        # When staging sends a stage-1 message
        staging.enqueue(dramatiq.Message(queue_name="stage1", actor_name="stage1_handle", args=(1,), kwargs={},
                                         options={}))
        # Then it waits under staging's keys: production's stage1 workers (and its /metrics) never see it
        assert queue_depths(staging, ["stage1"]) == {"stage1": 1}
        assert queue_depths(production, ["stage1"]) == {"stage1": 0}
        import redis
        client = redis.Redis.from_url(redis_url)
        assert client.llen("staging.dramatiq:stage1") == 1 and client.llen("dramatiq:stage1") == 0
    finally:
        production.close()
        staging.close()
