"""The ``x-op-signature`` header: hex HMAC-SHA256 of the raw body (SPEC §4).

Why over the raw bytes: re-serialising parsed JSON changes key order and
whitespace, so only the bytes as received can be checked. ``verify`` answers
a plain bool for anything a header can hold — missing, bytes, non-ASCII,
wrong length — because a bad signature is a reason to store the message as
rejected, never a reason for the consumer to crash. Comparison is
constant-time (``hmac.compare_digest``) so timing reveals nothing.
"""

from __future__ import annotations

import hashlib
import hmac

#: The header that carries the signature.
SIGNATURE_HEADER = "x-op-signature"
_HEX_DIGEST_CHARS = 64


def sign(secret: str, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of ``body`` under ``secret``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: object) -> bool:
    """Whether ``signature`` is ``body``'s signature under ``secret``.

    Tolerates any ``signature`` (``None``, bytes, garbage) and answers False.
    An empty secret verifies nothing: a misconfigured source fails closed.
    """
    candidate = _as_hex(signature)
    if candidate is None or not secret or not isinstance(body, (bytes, bytearray)):
        return False
    return hmac.compare_digest(candidate, sign(secret, bytes(body)))


def _as_hex(signature: object) -> str | None:
    if isinstance(signature, (bytes, bytearray)):
        try:
            signature = bytes(signature).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(signature, str):
        return None
    candidate = signature.strip().lower()
    if len(candidate) != _HEX_DIGEST_CHARS or not candidate.isascii():
        return None
    return candidate
