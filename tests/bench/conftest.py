"""The benchmarks' smoke tests need the real servers: skipped when one is unreachable, unless
``OP_REQUIRE_SERVERS=1`` (CI), where that is a failure."""
from __future__ import annotations

import os
import socket

import pytest

#: PostgreSQL, Redis, RabbitMQ on loopback, as `tools.bench.core` expects them by default.
PORTS = {"PostgreSQL": 5432, "Redis": 6379, "RabbitMQ": 5672}


@pytest.fixture
def servers_up() -> None:
    for name, port in PORTS.items():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                pass
        except OSError:
            if os.environ.get("OP_REQUIRE_SERVERS") == "1":
                pytest.fail(f"{name} on 127.0.0.1:{port} is unreachable and OP_REQUIRE_SERVERS=1")
            pytest.skip(f"{name} on 127.0.0.1:{port} is unreachable")
