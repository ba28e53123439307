"""Who is at the desk: the agent's token in a cookie, and forms nobody else can forge.

The browser keeps the agent's bearer token in an ``HttpOnly``,
``SameSite=Strict`` cookie — never readable by scripts, never sent on a
request another site starts — as ``<nonce>.<token>``: the nonce is new at
every sign-in, and a form's CSRF token is an HMAC of it keyed by the token,
so each session has its own, the server keeps no session state (any API
process can check it), and nobody without the cookie can compute it. The
sign-in form itself carries a random token doubled in a short-lived cookie,
so another site cannot sign an agent in under a token of its own. Unsafe
requests whose ``Origin`` or ``Sec-Fetch-Site`` names another site are
refused before any of that. The token is never logged nor written in a page.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Request, Response

from models.agent import Agent, hash_token

#: The cookie holding ``<nonce>.<token>``.
SESSION_COOKIE = "desk_session"
#: The cookie doubling the sign-in form's CSRF token.
LOGIN_COOKIE = "desk_login"
#: The form field carrying the CSRF token.
CSRF_FIELD = "csrf_token"
#: How long a sign-in lasts: a shift and a half.
SESSION_SECONDS = 12 * 3600
#: Longest token accepted from the sign-in form (ours are 43 characters).
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True)
class DeskSession:
    """A signed-in agent and the CSRF token of their session."""

    agent: Agent
    csrf: str


def valid_token_text(token: str) -> bool:
    """What a token typed into the form may look like: printable, no spaces, bounded."""
    return 0 < len(token) <= MAX_TOKEN_CHARS and token.isprintable() and not any(c.isspace() for c in token)


def live_agent(token: str) -> Agent | None:
    """The agent holding `token`, unless revoked."""
    if not valid_token_text(token):
        return None
    return Agent.get_or_none((Agent.token_hash == hash_token(token)) & Agent.revoked_at.is_null())  # type: ignore[no-any-return]


def csrf_token(nonce: str, token: str) -> str:
    return hmac.new(token.encode("utf-8"), b"desk-csrf:" + nonce.encode("ascii"), hashlib.sha256).hexdigest()


def current_session(request: Request) -> DeskSession | None:
    """The session of the request's cookie, or None (no cookie, malformed, unknown or revoked token)."""
    value = request.cookies.get(SESSION_COOKIE, "")
    nonce, dot, token = value.partition(".")
    if not dot or not _urlsafe(nonce):
        return None
    agent = live_agent(token)
    return None if agent is None else DeskSession(agent, csrf_token(nonce, token))


def _urlsafe(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_" for c in text)


def start_session(response: Response, token: str, secure: bool) -> None:
    """Set the session cookie for `token` (a fresh nonce: a new CSRF token)."""
    nonce = secrets.token_urlsafe(16)
    response.set_cookie(SESSION_COOKIE, f"{nonce}.{token}", max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="Strict", secure=secure)
    response.delete_cookie(LOGIN_COOKIE, path="/desk/")


def end_session(response: Response, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=secure)


def login_csrf(request: Request, response: Response | None = None) -> str:
    """The sign-in form's CSRF token: the one in the request's cookie, else a new one set on `response`."""
    current = request.cookies.get(LOGIN_COOKIE, "")
    if _urlsafe(current) and len(current) >= 16:
        return current
    fresh = secrets.token_urlsafe(24)
    if response is not None:
        response.set_cookie(LOGIN_COOKIE, fresh, max_age=3600, path="/desk/", httponly=True, samesite="Strict",
                            secure=request.is_secure)
    return fresh


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin or Sec-Fetch-Site)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    # The host only: behind a TLS-terminating proxy the browser says https while we see http.
    return urlsplit(origin).netloc.lower() == request.host.lower()


def form_is_genuine(request: Request, expected: str) -> bool:
    """Whether an unsafe request carries the expected CSRF token and comes from our own pages."""
    sent = request.form.get(CSRF_FIELD, "")
    return bool(expected) and same_origin(request) and hmac.compare_digest(sent.encode(), expected.encode())
