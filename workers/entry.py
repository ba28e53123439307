"""The dramatiq CLI's way in: ``dramatiq workers.<queue>`` builds the app and declares the actor.

Each queue's module (`workers.stage2`…) calls `serve` when it is imported,
which only the ``dramatiq`` command does: the app is built from the
environment by the composition root, the queue's actor is declared on that
app's broker, and the broker is handed to dramatiq both as the module's
``broker`` attribute (``dramatiq workers.stage2:broker``) and as dramatiq's
global broker (``dramatiq workers.stage2``, which asks `dramatiq.get_broker`).
One process may serve several queues (``dramatiq workers.stage1
workers.stage2``): the first entry imported builds the process's app, the
others declare their queue on it. In-process runs (``disputes run``, tests)
never import these modules; they call `workers.declare_all(app)` on an app of
their own.
"""
from __future__ import annotations

import dramatiq

from disputes.settings import settings_from_env
from disputes.wiring import App, build_app
from workers import declare

#: The app of this worker process, once an entry module has built it.
_served: list[App] = []


def serve(queue: str) -> dramatiq.Broker:
    """The broker of this worker process, with `queue`'s actor declared on it."""
    if not _served:
        _served.append(build_app(settings_from_env(), adopt_log_handlers=True))
        dramatiq.set_broker(_served[0].broker)
    declare(_served[0], queue)
    return _served[0].broker
