"""Structured logs: JSON lines for machines, plain lines for people, personal data masked.

A log line about a ticket is only useful when it says which ticket, in which
stage, from which message — and the code that logs (a guard, the workflow, a
library) rarely knows all three. So the *entry points* bind them once in a
context variable: the `LogContext` dramatiq middleware for every stage queue
message, `intake_context` for every message of the kombu intake. Every record
then carries ``ticket_id``, ``stage`` and ``message_id`` (`ContextFilter`),
whichever logger emitted it.

Off a terminal (a container, a pipe, the dramatiq CLI's workers) each record
is one JSON object per line (`JsonFormatter`); on a terminal, a plain line
with the context appended (`HumanFormatter`). `MaskFilter` masks e-mail
addresses, phone numbers and tokens in every message and traceback first.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from types import MappingProxyType
from typing import IO, Callable, Iterator, Literal, Mapping

#: The fields every record carries (None when not handling a ticket), in this order.
CONTEXT_FIELDS: tuple[str, ...] = ("ticket_id", "stage", "message_id")
#: Log formats: ``auto`` is JSON unless standard error is a terminal.
LogFormat = Literal["auto", "json", "text"]
#: The name of the handler `setup_logging` installs (so a second call replaces it).
HANDLER_NAME = "disputes"
#: Bodies larger than this are not parsed just to find a ticket id for the log context.
MAX_PEEK_BYTES = 65536

_EMPTY: Mapping[str, object] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar("disputes_log_context", default=_EMPTY)


# ---- the context -------------------------------------------------------------------------------

@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind `fields` (None values are left out) for every record logged inside the block."""
    token = _context.set(MappingProxyType({**_context.get(), **{k: v for k, v in fields.items() if v is not None}}))
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: object) -> None:
    """Add `fields` to the current context (e.g. the ticket id once a complaint became a ticket);
    inside a `log_context` block the addition ends with the block."""
    _context.set(MappingProxyType({**_context.get(), **{k: v for k, v in fields.items() if v is not None}}))


def clear() -> None:
    _context.set(_EMPTY)


def current_context() -> Mapping[str, object]:
    """The fields bound now (what the next record will carry)."""
    return _context.get()


def intake_context(routing_key: str, body: bytes, message_id: str | None) -> AbstractContextManager[None]:
    """The context of one intake message: stage ``intake``, its message id and routing key, and
    the ticket it names when the body says ``ticket_id`` (never raises, whatever the bytes)."""
    return log_context(stage="intake", message_id=message_id, routing_key=routing_key,
                       ticket_id=_peek_ticket_id(body))


def _peek_ticket_id(body: bytes) -> int | None:
    if not isinstance(body, (bytes, bytearray)) or len(body) > MAX_PEEK_BYTES or b'"ticket_id"' not in body:
        return None
    try:
        value = json.loads(body).get("ticket_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---- masking -----------------------------------------------------------------------------------

def _keep_last_four(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(3))
    return f"{match.group(1)}{match.group(2)}***{digits[-4:]}" if len(digits) > 4 else match.group(0)


#: (pattern, replacement) applied in order to every message and traceback.
MASKS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"(?i)\b(bearer)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (re.compile(r"(?i)\b((?:access_|api_|refresh_)?token|secret|password|authorization|x-op-signature)"
                r"(['\"]?\s*[:=]\s*['\"]?)(?!\*\*\*|bearer\b)[^'\"\s,;}&]+"), r"\1\2***"),
    (re.compile(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"), r"\1***@\2"),
    (re.compile(r"(?i)\b(phone|mobile|tel)(['\"]?\s*[:=]\s*['\"]?)(?!\*\*\*)([+\d][\d\s().-]*\d)"), _keep_last_four),
    (re.compile(r"(?<![\d*])(?:\+?86[\s-]?)?(1[3-9]\d)\d{4}(\d{4})(?!\d)"), r"\1****\2"),
    (re.compile(r"(?<![\w*])\+\d[\d\s().-]{6,}(\d{4})(?!\d)"), r"+***\1"),
)


def mask(text: str) -> str:
    """`text` with e-mail addresses, phone numbers and tokens masked (``a***@example.com``,
    ``138****5678``, ``Bearer ***``)."""
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


class MaskFilter(logging.Filter):
    """Masks personal data in the record's message, for every handler after this one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the record, the formatter reports it
            return True
        record.msg, record.args = mask(message), None
        return True


class ContextFilter(logging.Filter):
    """Copies the bound context onto the record (`CONTEXT_FIELDS` always, None when unbound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        for name, value in context.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


# ---- formats -----------------------------------------------------------------------------------

#: Attributes every LogRecord has; anything else on a record is an ``extra`` field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the context fields, extras
    and the traceback, masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": mask(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            entry[name] = getattr(record, name, None)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in entry and not name.startswith("_"):
                entry[name] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """``time LEVEL logger: message [ticket=… stage=… message=…]`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{name.removesuffix('_id')}={getattr(record, name)}" for name in CONTEXT_FIELDS
                   if getattr(record, name, None) is not None]
        first, newline, rest = line.partition("\n")
        return mask(first + (f" [{' '.join(context)}]" if context else "") + newline + rest)


def wants_json(stream: IO[str] | None, log_format: LogFormat = "auto") -> bool:
    if log_format != "auto":
        return log_format == "json"
    try:
        return not (stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return True


def setup_logging(level: int = logging.INFO, log_format: LogFormat = "auto", stream: IO[str] | None = None) -> None:
    """Install the one handler on the root logger (replacing one a previous call installed)."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    _equip(handler, wants_json(stream, log_format))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def adopt_handlers(logger: logging.Logger, log_format: LogFormat = "auto") -> None:
    """Give the handlers someone else installed (the dramatiq CLI's) our filters and format;
    ``auto`` looks at whether the process's standard error is a terminal."""
    as_json = log_format == "json" or (log_format == "auto" and not os.isatty(2))
    for handler in logger.handlers:
        _equip(handler, as_json)


def _equip(handler: logging.Handler, as_json: bool) -> None:
    for kind in (ContextFilter, MaskFilter):
        if not any(isinstance(f, kind) for f in handler.filters):
            handler.addFilter(kind())
    handler.setFormatter(JsonFormatter() if as_json else HumanFormatter())
