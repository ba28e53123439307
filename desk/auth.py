"""Bearer tokens: who is calling.

Tokens are issued by ``disputes agents add`` and stored only as SHA-256
hashes, so a request is authenticated by hashing what it presents and looking
for a live (not revoked) agent with that hash. Every failure — no header, not
``Bearer``, unknown, revoked — is the same 401, and the token itself is never
logged or echoed.

Every request asks, so a live agent found by its hash is kept in-process for
at most `TokenCache.TTL` (one second, counted from before the query that found
it): a burst of requests by one agent costs one query, and a revocation still
takes effect within a second. Unknown and revoked tokens are never cached.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Request, current_app, g

from desk.errors import unauthorized
from models.agent import Agent, hash_token
from models.prepared import Prepared

#: Endpoints anyone may call (load balancers and Prometheus carry no token).
PUBLIC_ENDPOINTS = frozenset({"ops.health", "ops.metrics", "api-docs.openapi_json"})

#: Where `desk.app` keeps the application's token cache (``flask.Flask.extensions``).
CACHE_KEY = "disputes.tokens"


class TokenCache:
    """Live agents by token hash, each for at most `ttl` seconds; thread-safe, at most `max_size` entries.

    An entry's age is counted from before the query that read it, so what it says was true at
    most `ttl` ago: an agent revoked at T is refused by every request starting after T + `ttl`.
    The agent instances are shared between requests and threads: read them, never change them.
    """

    TTL = 1.0
    MAX_SIZE = 4096

    def __init__(self, ttl: float = TTL, max_size: int = MAX_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_size, self.clock = ttl, max_size, clock
        self._entries: dict[str, tuple[float, Agent]] = {}  # hash -> (expires, agent), oldest first
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> Agent | None:
        """The cached live agent of `token_hash`, or None when unknown or expired."""
        entry = self._entries.get(token_hash)  # a dict read is atomic: no lock on the hot path
        if entry is None:
            return None
        if entry[0] <= self.clock():
            with self._lock:
                if self._entries.get(token_hash) is entry:
                    del self._entries[token_hash]
            return None
        return entry[1]

    def put(self, token_hash: str, agent: Agent, read_at: float) -> None:
        """Keep `agent`, read by a query that started at `read_at` (of `clock`), until `read_at + ttl`."""
        expires = read_at + self.ttl
        with self._lock:
            self._entries.pop(token_hash, None)  # re-inserted last: the dict stays in expiry order
            if len(self._entries) >= self.max_size:
                self._evict()
            self._entries[token_hash] = (expires, agent)

    def _evict(self) -> None:
        now = self.clock()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self.max_size:  # all still live: drop the oldest
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 when there is none."""
    if not header:
        raise unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return token


def authenticate(header: str | None, cache: TokenCache | None = None) -> Agent:
    """The live agent holding the presented token; 401 otherwise. With a `cache`, an agent found
    less than its TTL ago is answered without a query."""
    token_hash = hash_token(bearer_token(header))
    cached = cache.get(token_hash) if cache is not None else None
    if cached is not None:
        return cached
    read_at = cache.clock() if cache is not None else 0.0
    agent = _BY_TOKEN.first(Agent, token_hash=token_hash)
    if agent is None:
        raise unauthorized("unknown or revoked token")
    if cache is not None:
        cache.put(token_hash, agent, read_at)
    return agent  # type: ignore[no-any-return]


#: Every request asks this (unless cached): compiled once (models.prepared).
_BY_TOKEN = Prepared(lambda s: Agent.select().where((Agent.token_hash == s.token_hash) & Agent.revoked_at.is_null())
                     .limit(1))


def needs_auth(request: Request) -> bool:
    """Every matched route but the public ones (unmatched routes fall through to 404/405)."""
    if request.url_rule is None or request.method == "OPTIONS":
        return False
    return request.endpoint not in PUBLIC_ENDPOINTS


def authenticate_request(request: Request) -> None:
    """``before_request`` hook: put the caller on ``g.agent`` or refuse with 401."""
    if not needs_auth(request):
        g.agent = None
        return
    g.agent = authenticate(request.headers.get("Authorization"), current_app.extensions.get(CACHE_KEY))


def current_agent() -> Agent:
    """The authenticated caller of this request (routes needing auth only)."""
    agent: Agent | None = g.get("agent")
    if agent is None:
        raise unauthorized("authentication required")
    return agent
