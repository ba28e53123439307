"""The network soak's hosts: namespaces joined by veth pairs, and the faults it sets on a link."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tools.bench import leftovers
from tools.bench.netns import Impairment, Network, _has_netfilterqueue

CAN_CUT = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None


@pytest.mark.skipif(not CAN_CUT, reason="network namespaces and faults need root, iproute2 and iptables")
def test_the_network_fault_kinds_cut_delay_and_heal_a_link() -> None:
    """A partition drops everything either way without a reset; a one-way fault lets the host's
    packets through and nothing back (a connect hangs: the SYN-ACK never arrives); heal restores."""
    has_delayer = _has_netfilterqueue()
    net = Network(f"dt{os.getpid() % 10000}", ["a"])
    try:
        net.create()
        server = subprocess.Popen(["ip", "netns", "exec", net.servers_ns, sys.executable, "-c",
                                   "import socket, time\n"
                                   "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                   "s.bind(('0.0.0.0', 7777)); s.listen(50)\n"
                                   "while True: c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"])
        target = net.links["a"].far_addr

        def connects() -> bool:
            done = subprocess.run(["ip", "netns", "exec", net.ns("a"), sys.executable, "-c",
                                   f"import socket; s = socket.create_connection(('{target}', 7777), timeout=1.5);"
                                   " assert s.recv(2) == b'hi'"], capture_output=True, timeout=30, check=False)
            return done.returncode == 0

        deadline = time.monotonic() + 10
        while not connects():
            assert time.monotonic() < deadline, "the server never answered over the link"
        net.partition("a")
        assert not connects()
        net.heal("a")
        assert connects()
        net.one_way("a")
        assert not connects()
        net.heal("a")
        assert connects()
        if has_delayer:
            net.impair("a", Impairment(delay_ms=400, jitter_ms=0))
            time.sleep(1.0)  # the delayers bind their queues
            began = time.monotonic()
            assert connects()
            # SYN, SYN-ACK, then the greeting: three crossings of at least 400 ms each
            assert time.monotonic() - began >= 1.0
            net.heal("a")
        server.kill()
    finally:
        net.close()
    assert not [n for n in leftovers.namespaces() if n.startswith(net.prefix)]


@pytest.mark.skipif(not CAN_CUT, reason="network namespaces need root and iproute2")
def test_runs_starting_together_take_blocks_of_their_own() -> None:
    """Two soaks that set up their hosts at the same moment each get their own outside addresses
    (seen: both took the free block, and one soak's servers became unreachable to it)."""
    from concurrent.futures import ThreadPoolExecutor

    nets = [Network(f"dk{os.getpid() % 1000}{n}", ["a"]) for n in range(3)]
    try:
        with ThreadPoolExecutor(len(nets)) as pool:
            list(pool.map(Network.create, nets))
        addresses = [net.controller.near_addr for net in nets]
        assert len(set(addresses)) == len(nets), addresses
        assert len({net.block for net in nets}) == len(nets)
    finally:
        for net in nets:
            net.close()
