"""The deploy/ tests: the end-to-end scrape runs on the e2e stack of tests/e2e (its own PostgreSQL
schema, Redis db and RabbitMQ intake queue, the real processes), so its fixtures are used here."""
from __future__ import annotations

from tests.e2e.conftest import servers, servers_lock, stack  # noqa: F401  (fixtures)
