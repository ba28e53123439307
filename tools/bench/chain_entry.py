"""Loaded after a stage's entry module by ``dramatiq workers.stageN tools.bench.chain_entry``.

Adds the two baseline chains' actors (`tools.bench.chain`: the no-op chain and the persisted-hop
chain) to the broker the stage's entry (`workers.entry`) built for this worker process, so the
chains and the stage share its broker, processes, threads and database connections.
"""
from __future__ import annotations

import dramatiq

from tools.bench.chain import declare_chain, declare_persisted_chain

declare_chain(dramatiq.get_broker())
declare_persisted_chain(dramatiq.get_broker())
