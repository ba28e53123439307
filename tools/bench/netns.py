"""Several hosts on one machine: network namespaces joined by veth pairs, and the faults of a real
network between them (latency, jitter, loss and reordering; partitions both ways or one way only).

The soak's hosts (``disputes bench chaos --network``): one namespace holds the servers (PostgreSQL,
Redis, RabbitMQ), one each the API, the intake, the scheduler and every stage queue's workers. Each
host has its own point-to-point link to the servers' namespace; the API's host has a second link to
the machine's own namespace, where the soak's controller, the agents and the parties run, so what
they see of the system is never itself faulted. Addresses come from 198.18.0.0/15, the range set
aside for network benchmarks (RFC 2544): nothing on a real network answers there.

A fault is set on one link, on both ends, where packets arrive (iptables in each namespace), so it
covers both directions: loss (iptables' random match), partitions (DROP: no reset, connections hang
until a timeout), latency with jitter and reordering (NFQUEUE to `tools.bench.delayer`, since this
machine's kernel has no netem). A one-way partition drops only what the servers send to the host
(the host's requests arrive, no answer comes back: the half-open connection that never errors).
`heal` takes the link back to a clean state.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from tools.bench.core import BenchError
from tools.bench.leftovers import note, remove_namespace

#: The benchmark range (RFC 2544): a host's link to the servers is 198.18.<n>.0/30 (both ends in
#: namespaces of the run's own), a link to the machine's namespace 198.19.<block + n>.0/30.
SERVER_NET, OUTSIDE_NET = "198.18", "198.19"


def ip(*args: str, netns: str | None = None) -> str:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    return _run(argv)


def iptables(netns: str, *args: str) -> str:
    return _run(["ip", "netns", "exec", netns, "iptables", "-w", *args])


def check_tools() -> None:
    """The network soak needs iptables and the delayer's library; say how to get them."""
    missing = [what for what, ok in (("iptables (Debian: apt-get install iptables)", shutil.which("iptables")),
                                     ("NetfilterQueue (apt-get install libnetfilter-queue-dev, then "
                                      "pip install -e '.[network-soak]')", _has_netfilterqueue()))
               if not ok]
    if os.geteuid() != 0:
        missing.insert(0, "root (network namespaces)")
    if missing:
        raise BenchError("the network soak needs " + "; ".join(missing))


def _has_netfilterqueue() -> bool:
    import importlib.util
    return importlib.util.find_spec("netfilterqueue") is not None


#: Blocks of the outside range (198.19.<block + n>.0/30): 16 at once, 16 links each.
BLOCK = 16
#: Held while a run picks its block and puts its addresses on it: two runs starting together
#: would otherwise both see the same block free and route each other's traffic.
BLOCK_LOCK = "/run/lock/disputes-bench-netns.lock"


@contextlib.contextmanager
def _blocks_locked():
    path = BLOCK_LOCK if os.path.isdir(os.path.dirname(BLOCK_LOCK)) else "/tmp/disputes-bench-netns.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _free_block() -> int:
    """The first block of 198.19.0.0/16 none of whose addresses the machine's namespace has."""
    used = {int(part.split(".")[2]) // BLOCK for part in ip("-4", "-o", "addr").split()
            if part.startswith(OUTSIDE_NET + ".")}
    for block in range(256 // BLOCK):
        if block not in used:
            return block * BLOCK
    raise BenchError("every block of 198.19.0.0/16 is in use: are 16 soaks running?")


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Link:
    """A host's veth pair to the servers (or to the controller): one end in each namespace."""

    host: str
    near_ns: str        # the host's namespace
    near_dev: str
    near_addr: str
    far_ns: str | None  # the servers' namespace (None: the machine's own)
    far_dev: str
    far_addr: str


@dataclass(frozen=True)
class Impairment:
    """What a link suffers, both ways (what `tc netem` would add)."""

    delay_ms: int = 0
    jitter_ms: int = 0
    loss_pct: float = 0.0
    reorder_pct: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.delay_ms:
            parts.append(f"{self.delay_ms} ms" + (f" ± {self.jitter_ms}" if self.jitter_ms else ""))
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g} % loss")
        if self.reorder_pct:
            parts.append(f"{self.reorder_pct:g} % reordered")
        return ", ".join(parts)


class Network:
    """The namespaces and links of one soak run; `close` removes them (and everything inside)."""

    def __init__(self, prefix: str, hosts: list[str], outside: tuple[str, ...] = ("api",)) -> None:
        if len(prefix) > 8:
            raise BenchError("a network prefix is at most 8 characters (interface names are 15)")
        self.prefix = prefix
        self.servers_ns = f"{prefix}-servers"
        self.links: dict[str, Link] = {}
        self.outside: dict[str, Link] = {}
        self._hosts, self._outside = hosts, outside
        self.made: list[str] = []
        self._rules: dict[str, list[tuple[str, list[str]]]] = {}
        self._delayers: dict[str, list[subprocess.Popen]] = {}

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def create(self) -> Network:
        with _blocks_locked():
            return self._create()

    def _create(self) -> Network:
        self.block = _free_block()
        self._add_ns(self.servers_ns)
        # The soak's own view of the servers (its checks, the parties' messages, the events tap).
        self.controller = self._pair("servers", 0, self.servers_ns, None, OUTSIDE_NET, "o")
        for n, host in enumerate(self._hosts, start=1):
            self._add_ns(self.ns(host))
            self.links[host] = self._pair(host, n, self.ns(host), self.servers_ns, SERVER_NET, "s")
            if host in self._outside:
                self.outside[host] = self._pair(host, n, self.ns(host), None, OUTSIDE_NET, "o")
        return self

    def _add_ns(self, name: str) -> None:
        note("namespaces", name)
        ip("netns", "add", name)
        self.made.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def _pair(self, host: str, n: int, near_ns: str, far_ns: str | None, net: str, kind: str) -> Link:
        near_dev, far_dev = f"{self.prefix}{kind}{n}h", f"{self.prefix}{kind}{n}f"
        ip("link", "add", near_dev, "type", "veth", "peer", "name", far_dev)
        ip("link", "set", near_dev, "netns", near_ns)
        if far_ns is not None:
            ip("link", "set", far_dev, "netns", far_ns)
        # Links that end in the machine's own namespace take a block of their own, so that two
        # soaks (or a soak and a test) running at once never route to each other's servers.
        third = self.block + n if net == OUTSIDE_NET else n
        near_addr, far_addr = f"{net}.{third}.2", f"{net}.{third}.1"
        ip("addr", "add", f"{near_addr}/30", "dev", near_dev, netns=near_ns)
        ip("addr", "add", f"{far_addr}/30", "dev", far_dev, netns=far_ns)
        ip("link", "set", near_dev, "up", netns=near_ns)
        ip("link", "set", far_dev, "up", netns=far_ns)
        return Link(host, near_ns, near_dev, near_addr, far_ns, far_dev, far_addr)

    # ---- faults --------------------------------------------------------------------------------
    # Packets are dropped or held where they arrive (each end's INPUT), never where they are sent:
    # a DROP in OUTPUT fails the sender's system call at once, which no real network does.

    def _ends(self, host: str) -> tuple[tuple[str, str], tuple[str, str]]:
        link = self.links[host]
        return (link.near_ns, link.near_dev), (link.far_ns or "", link.far_dev)

    def _rule(self, host: str, netns: str, spec: list[str]) -> None:
        iptables(netns, "-A", *spec)
        self._rules.setdefault(host, []).append((netns, spec))

    def impair(self, host: str, impairment: Impairment) -> None:
        """Loss in the kernel (iptables' random match); latency, jitter and reordering by a
        `tools.bench.delayer` on each end (the kernel has no netem here, see its docstring)."""
        n = list(self.links).index(host) + 1
        for end, (netns, dev) in enumerate(self._ends(host)):
            if impairment.loss_pct:
                self._rule(host, netns, ["INPUT", "-i", dev, "-m", "statistic", "--mode", "random",
                                         "--probability", f"{impairment.loss_pct / 100:g}", "-j", "DROP"])
            if impairment.delay_ms or impairment.reorder_pct:
                queue = 2 * n + end
                self._delayers.setdefault(host, []).append(subprocess.Popen(
                    ["ip", "netns", "exec", netns, sys.executable, "-m", "tools.bench.delayer", str(queue),
                     str(impairment.delay_ms), str(impairment.jitter_ms), f"{impairment.reorder_pct:g}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
                # --queue-bypass: were the delayer gone, packets would pass rather than vanish
                self._rule(host, netns, ["INPUT", "-i", dev, "-j", "NFQUEUE", "--queue-num", str(queue),
                                         "--queue-bypass"])

    def partition(self, host: str) -> None:
        """Nothing crosses the host's link either way; connections stay open, packets vanish
        (as when a switch or a firewall drops them: no reset, no error until a timeout)."""
        for netns, dev in self._ends(host):
            self._rule(host, netns, ["INPUT", "-i", dev, "-j", "DROP"])

    def one_way(self, host: str) -> None:
        """The host's packets reach the servers; nothing comes back."""
        netns, dev = self._ends(host)[0]
        self._rule(host, netns, ["INPUT", "-i", dev, "-j", "DROP"])

    def heal(self, host: str) -> None:
        for netns, spec in self._rules.pop(host, []):
            iptables(netns, "-D", *spec)
        for delayer in self._delayers.pop(host, []):
            delayer.terminate()  # it lets through what it still holds
            try:
                delayer.wait(timeout=5)
            except subprocess.TimeoutExpired:
                delayer.kill()

    # ---- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        for name in reversed(self.made):
            remove_namespace(name)
        self.made.clear()
