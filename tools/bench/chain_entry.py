"""Loaded after a stage's entry module by ``dramatiq workers.stageN tools.bench.chain_entry``.

Adds the no-op chain's actors to the broker the stage's entry (`workers.entry`)
built for this worker process, so the chain and the stage share its broker,
processes and threads.
"""
from __future__ import annotations

import dramatiq

from tools.bench.chain import declare_chain

declare_chain(dramatiq.get_broker())
