"""Latency, jitter and reordering on a link, in user space: ``python -m tools.bench.delayer QUEUE
DELAY_MS JITTER_MS [REORDER_PCT]``, run inside a network namespace whose iptables send a link's
packets to NFQUEUE ``QUEUE``.

`tc netem` does this in the kernel, and the soak would use it; kernels built without
``CONFIG_NET_SCH_NETEM`` (this machine's, among them) have no netem, so each packet is held here for
DELAY ± JITTER ms (uniform) and then let through — packets whose delays cross arrive out of order, as
on a jittery link; with REORDER_PCT, that share of packets goes through at once, ahead of the others.
One thread, one loop: wait for the next packet or the next release, whichever comes first.
"""
from __future__ import annotations

import heapq
import itertools
import random
import select
import signal
import sys
import time


def main(argv: list[str]) -> int:
    from netfilterqueue import NetfilterQueue  # the network soak's own dependency, checked before it starts

    queue_num, delay, jitter = int(argv[0]), float(argv[1]) / 1000, float(argv[2]) / 1000
    reorder = float(argv[3]) / 100 if len(argv) > 3 else 0.0
    held: list[tuple[float, int, object]] = []
    order = itertools.count()
    rng = random.Random()

    def hold(packet) -> None:
        if reorder and rng.random() < reorder:
            packet.accept()
            return
        heapq.heappush(held, (time.monotonic() + max(0.0, rng.uniform(delay - jitter, delay + jitter)),
                              next(order), packet))

    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    nfq = NetfilterQueue()
    nfq.bind(queue_num, hold, max_len=65536)
    fd = nfq.get_fd()
    try:
        while running[0]:
            wait = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
            readable, _, _ = select.select([fd], [], [], wait)
            if readable:
                nfq.run(block=False)
            now = time.monotonic()
            while held and held[0][0] <= now:
                heapq.heappop(held)[2].accept()  # type: ignore[attr-defined]
    finally:
        for _, _, packet in held:  # a heal lets what is held through
            packet.accept()  # type: ignore[attr-defined]
        nfq.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
