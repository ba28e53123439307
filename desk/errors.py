"""Every refusal the API gives, in the one shape SPEC §6 fixes.

Clients (the desk, upstream tools, contract tests) read
``{"error": {"code", "message", "fields"}}`` whatever went wrong — a bad token,
a body webargs could not parse, a route that does not exist, a ticket that
moved on. `from_http_exception` translates what werkzeug and webargs raise, so
`desk.app` can replace flask-smorest's handlers; a real server fault becomes
`internal_error()`, a 500 in the same shape without a traceback.

Nothing here imports Flask (only `models.errors`, the root of the error
tree): the domain helpers of the desk (`desk.actions`, `desk.claims`) raise
`ApiError` and stay usable from the CLI and tests without a request;
`desk.app` turns it into a response.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from models.errors import DisputesError

if TYPE_CHECKING:
    from werkzeug.exceptions import HTTPException

#: Error code by HTTP status, for errors raised by werkzeug or webargs rather than by us.
CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "validation_failed", 429: "too_many_requests", 500: "internal", 503: "unavailable",
}

Fields = dict[str, list[str]]


class ApiError(DisputesError):
    """A refusal with an HTTP status, a stable code, a message and per-field reasons (the desk's
    branch of the `models.errors` tree: raised to answer a request, never retried)."""

    def __init__(self, status: int, code: str, message: str, fields: Mapping[str, list[str]] | None = None,
                 **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields: Fields = {k: list(v) for k, v in (fields or {}).items()}
        #: Extra keys of the error object (e.g. ``current_version`` of a version conflict).
        self.extra = extra

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields, **self.extra}}


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def unprocessable(message: str, fields: Mapping[str, list[str]], code: str = "validation_failed") -> ApiError:
    return ApiError(422, code, message, fields)


def flatten_messages(messages: object, prefix: str = "") -> Fields:
    """marshmallow/webargs messages (nested by location, field, list index) as ``{"a.b": [msg]}``."""
    if isinstance(messages, Mapping):
        out: Fields = {}
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for field_name, msgs in flatten_messages(value, name).items():
                out.setdefault(field_name, []).extend(msgs)
        return out
    if isinstance(messages, (list, tuple)) and all(isinstance(m, str) for m in messages):
        return {prefix or "_schema": [str(m) for m in messages]}
    if isinstance(messages, (list, tuple)):
        out = {}
        for item in messages:
            for field_name, msgs in flatten_messages(item, prefix).items():
                out.setdefault(field_name, []).extend(msgs)
        return out
    return {prefix or "_schema": [str(messages)]}


#: Request locations webargs nests its messages under; the location is dropped from field names.
_LOCATIONS = ("json", "query", "querystring", "view_args", "path", "headers", "form", "files", "cookies")


def from_http_exception(error: HTTPException) -> ApiError:
    """An `ApiError` for whatever werkzeug or webargs raised (404 route, 405, bad JSON, 422 body)."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("errors") or data.get("messages")
    fields: Fields = {}
    if isinstance(messages, Mapping):
        if set(messages) <= set(_LOCATIONS):
            for location_messages in messages.values():
                for name, msgs in flatten_messages(location_messages).items():
                    fields.setdefault(name, []).extend(msgs)
        else:
            fields = flatten_messages(messages)
    code = CODES.get(status, "error")
    if status == 400 and fields.get("_schema") == ["Invalid JSON body."]:
        return ApiError(400, "bad_request", "the request body is not valid JSON", {"json": ["Invalid JSON body."]})
    if status == 422:
        return ApiError(422, code, "the request is not valid: see fields", fields)
    if status == 405:
        return ApiError(405, code, f"this route does not accept this method (allowed: "
                                    f"{', '.join(sorted(getattr(error, 'valid_methods', None) or []))})")
    if status == 404:
        return ApiError(404, code, "no such route" if not data.get("message") else str(data["message"]))
    message = str(data.get("message") or error.description or error.name)
    return ApiError(status, code, message, fields)


def internal_error() -> ApiError:
    return ApiError(500, "internal", "an internal error occurred; it has been logged")
