"""What the intake consumer does so that no delivery kombu hands it can hurt it.

Two things happen in kombu before any of our code runs, and both are handled here:
kombu inflates a compressed body (`bound_decompression` caps that at the largest
body the intake accepts), and kombu builds the message object whose body may be
text or bytes and whose routing key or message id may be missing (`raw_delivery`
gives the consumer plain values either way).

Making strings storable in PostgreSQL (NUL, lone surrogates, over-long ids) is the
other half of the hardening, but it guards the intake's tables rather than kombu
and admission needs it below the workers: it is `models.intake.storable`.
"""
from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any, Callable

from kombu import compression

from messages.intake import MAX_BODY_BYTES


def bound_decompression(limit: int = MAX_BODY_BYTES) -> None:
    """kombu inflates a body whose ``compression`` header names a codec before any of our code sees it,
    so a few kilobytes of gzip could become gigabytes in the consumer's memory. Swap kombu's decoders
    for ones that stop past `limit` bytes (the largest body the intake accepts) and refuse codecs we
    cannot bound; the message then fails to decode and goes to the rejected store (`on_decode_error`)."""
    bounded = {"application/x-gzip": zlib.decompressobj, "application/x-bz2": bz2.BZ2Decompressor,
               "application/x-lzma": lzma.LZMADecompressor}
    for content_type in compression.encoders():
        encoder = compression.get_encoder(content_type)[0]
        make = bounded.get(content_type)
        compression.register(encoder, _bounded_decoder(make, limit) if make else _refuse(content_type), content_type)


def _bounded_decoder(make: Callable[[], Any], limit: int) -> Callable[[bytes], bytes]:
    """A decoder that inflates at most one byte past `limit`, and refuses a body cut short."""
    def decode(body: bytes) -> bytes:
        inflater = make()
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit:
            raise ValueError(f"the body inflates past {limit} bytes")
        if not inflater.eof:
            raise ValueError("the compressed body is truncated")
        return out
    return decode


def _refuse(content_type: str) -> Callable[[bytes], bytes]:
    """A decoder for a codec whose output we cannot bound: every body is a decode error."""
    def decode(body: bytes) -> bytes:
        raise ValueError(f"compression {content_type} is not accepted")
    return decode


def raw_delivery(message: Any) -> tuple[str, bytes, str | None]:
    """Routing key, body bytes and message id of a delivery, whatever kombu made of it."""
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8", "surrogatepass")
    return (message.delivery_info or {}).get("routing_key") or "", body, (message.properties or {}).get("message_id")
