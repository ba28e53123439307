"""Where the soak's servers and processes run: all on the machine's loopback (`OneHost`), or as
several hosts joined by a network the soak can fault (`Hosts`, ``disputes bench chaos --network``).

Either gives the soak the same things: the private servers (each can be restarted), the settings a
process needs on its host (the servers' addresses as that host reaches them), the command line that
starts a process on its host, and the API's address as the soak's agents reach it. The soak's own
process (the controller, the agents, the parties, the events tap) always sees the system from the
machine's own namespace, over links no fault touches.
"""
from __future__ import annotations

from pathlib import Path

from disputes.settings import QUEUES
from tools.bench.netns import Network, check_tools
from tools.bench.private_servers import PrivatePostgres, PrivateRabbit, PrivateRedis, RabbitVhost

#: The network soak's hosts besides the servers': one per process of the Procfile.
HOSTS = (*QUEUES, "intake", "scheduler", "api")


class OneHost:
    """Servers of one's own on loopback (a private vhost of the shared RabbitMQ)."""

    network: Network | None = None
    api_bind = "127.0.0.1"

    def __init__(self, tmp: Path, amqp: str) -> None:
        self.redis, self.pg, self.broker = PrivateRedis(tmp), PrivatePostgres(tmp), RabbitVhost(amqp)

    def start(self) -> None:
        self.redis.start()
        self.pg.create()
        self.broker.create()

    def close(self) -> None:
        self.redis.stop()
        self.pg.destroy()
        self.broker.delete()

    def urls(self, host: str | None = None) -> dict[str, str]:
        return {"OP_DATABASE_URL": self.pg.url, "OP_BROKER_URL": self.redis.url, "OP_INTAKE_URL": self.broker.url}

    def argv(self, host: str, argv: list[str]) -> list[str]:
        return argv

    def api_base(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    @property
    def restarts(self) -> dict[str, int]:
        return {"redis": self.redis.restarts, "postgres": self.pg.restarts}


class Hosts:
    """A namespace for the servers (PostgreSQL, Redis and a RabbitMQ node of their own) and one per
    process; each process reaches the servers over its own link, which the soak can fault."""

    api_bind = "0.0.0.0"  # both of the API host's links: the servers' side and the agents'

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.network = Network(prefix, list(HOSTS))
        self.tmp = tmp

    def start(self) -> None:
        check_tools()
        net = self.network.create()
        here = net.controller.near_addr  # the servers as this process reaches them
        self.redis = PrivateRedis(self.tmp, netns=net.servers_ns, address=here)
        self.pg = PrivatePostgres(self.tmp, netns=net.servers_ns, address=here)
        self.broker = PrivateRabbit(self.tmp, net.servers_ns, here)
        self.redis.start()
        self.pg.create()
        self.broker.start()

    def close(self) -> None:
        for step in (self.redis.stop, self.pg.destroy, self.broker.stop, self.network.close):
            try:
                step()
            except Exception:  # noqa: BLE001 - the rest must still be cleaned up
                continue

    def urls(self, host: str | None = None) -> dict[str, str]:
        address = self.network.controller.near_addr if host is None else self.network.links[host].far_addr
        return {"OP_DATABASE_URL": self.pg.url_at(address), "OP_BROKER_URL": self.redis.url_at(address),
                "OP_INTAKE_URL": self.broker.url_at(address)}

    def argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.network.ns(host), *argv]

    def api_base(self, port: int) -> str:
        return f"http://{self.network.outside['api'].near_addr}:{port}"

    @property
    def restarts(self) -> dict[str, int]:
        return {"redis": self.redis.restarts, "postgres": self.pg.restarts}
