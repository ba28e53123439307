"""Bearer tokens: who is calling.

Tokens are issued by ``disputes agents add`` and stored only as SHA-256
hashes, so a request is authenticated by hashing what it presents and looking
for a live (not revoked) agent with that hash. Every failure — no header, not
``Bearer``, unknown, revoked — is the same 401, and the token itself is never
logged or echoed.
"""
from __future__ import annotations

from flask import Request, g

from desk.errors import unauthorized
from models.agent import Agent, hash_token
from models.prepared import Prepared

#: Endpoints anyone may call (load balancers and Prometheus carry no token).
PUBLIC_ENDPOINTS = frozenset({"ops.health", "ops.metrics", "api-docs.openapi_json"})


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 when there is none."""
    if not header:
        raise unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return token


def authenticate(header: str | None) -> Agent:
    """The live agent holding the presented token; 401 otherwise."""
    token = bearer_token(header)
    agent = _BY_TOKEN.first(Agent, token_hash=hash_token(token))
    if agent is None:
        raise unauthorized("unknown or revoked token")
    return agent  # type: ignore[no-any-return]


#: Every request asks this: compiled once (models.prepared).
_BY_TOKEN = Prepared(lambda s: Agent.select().where((Agent.token_hash == s.token_hash) & Agent.revoked_at.is_null())
                     .limit(1))


def needs_auth(request: Request) -> bool:
    """Every matched route but the public ones (unmatched routes fall through to 404/405)."""
    if request.url_rule is None or request.method == "OPTIONS":
        return False
    return request.endpoint not in PUBLIC_ENDPOINTS


def authenticate_request(request: Request) -> None:
    """``before_request`` hook: put the caller on ``g.agent`` or refuse with 401."""
    g.agent = authenticate(request.headers.get("Authorization")) if needs_auth(request) else None


def current_agent() -> Agent:
    """The authenticated caller of this request (routes needing auth only)."""
    agent: Agent | None = g.get("agent")
    if agent is None:
        raise unauthorized("authentication required")
    return agent
