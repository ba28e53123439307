"""The intake never crashes: any input gives a loaded dict or ``IntakeInvalid``, nothing else.

Random bytes and random JSON mostly die at the first check, so the most useful
strategy here mutates a *valid* body — one field replaced by a hostile value,
or removed — which drives every field of every schema.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages import INTAKE_ROUTING_KEYS, IntakeInvalid, parse_intake, sign, verify
from messages.intake import INTERNAL_ERROR_REASON

from .test_intake_schemas import good_body

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**62, max_value=10**40),
    st.floats(), st.text(max_size=40), st.sampled_from(
        ["", " ", "\x00", "\ud800", "x" * 5000, "2024-05-01T10:00:00", "0001-01-01T00:00:00-23:59",
         "9999-12-31T23:59:59+00:00", "javascript:x", "CNY", "ab" * 32, "-0", "1e400"],
    ),
)
json_values = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
routing_keys = st.sampled_from(INTAKE_ROUTING_KEYS)


def outcome(routing_key: object, body: Any) -> dict[str, Any] | None:
    """Parse and return the loaded dict, or None when refused; any other exception fails."""
    try:
        loaded = parse_intake(routing_key, body)  # type: ignore[arg-type]
    except IntakeInvalid as error:
        assert error.reasons and all(isinstance(key, str) for key in error.reasons)
        for messages in error.reasons.values():
            assert messages and all(isinstance(message, str) for message in messages)
        assert not any(INTERNAL_ERROR_REASON in m for messages in error.reasons.values() for m in messages)
        return None
    assert isinstance(loaded, dict)
    return loaded


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document, parents before children."""
    found: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


def mutate(body: dict[str, Any], path: tuple[Any, ...], replacement: Any, delete: bool) -> dict[str, Any]:
    """``body`` with the value at ``path`` replaced, or removed."""
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    return body


@FUZZ
@given(routing_key=routing_keys, raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_intake(routing_key: str, raw: bytes) -> None:
    outcome(routing_key, raw)


@FUZZ
@given(routing_key=routing_keys, document=json_values)
def test_arbitrary_json_never_crashes_the_intake(routing_key: str, document: Any) -> None:
    outcome(routing_key, json.dumps(document))
    outcome(routing_key, json.dumps({"schema_version": 1, "payload": document}))


@pytest.mark.parametrize("routing_key", INTAKE_ROUTING_KEYS)
@FUZZ
@given(data=st.data(), replacement=json_values, delete=st.booleans())
def test_a_valid_body_with_one_hostile_field_never_crashes_the_intake(
    routing_key: str, data: st.DataObject, replacement: Any, delete: bool,
) -> None:
    body = good_body(routing_key)
    path = data.draw(st.sampled_from(paths_of(body)))
    loaded = outcome(routing_key, json.dumps(mutate(body, path, replacement, delete)))
    if loaded is not None:
        assert loaded["schema_version"] == 1


@FUZZ
@given(routing_key=st.one_of(st.text(max_size=40), routing_keys), text=st.text(max_size=300))
def test_arbitrary_text_and_routing_keys_never_crash_the_intake(routing_key: str, text: str) -> None:
    outcome(routing_key, text)


@pytest.mark.parametrize(
    "body",
    [b"[" * 200_000,
     b'{"schema_version": 1, "ticket_id": 1, "tracking_no": ' + b"[" * 900 + b"]" * 900 + b"}",
     b'{"schema_version": 1' + b', "x": 1' * 100_000 + b"}", b'{"schema_version": ' + b"9" * 10_000 + b"}",
     b'{"schema_version": 1e999}', b"\x00" * 1000, "\ud800", None, 12, ["schema_version"]],
)
@pytest.mark.parametrize("routing_key", ["goods.returned", "complaint.submitted", None])
def test_pathological_inputs_are_refused_not_raised(routing_key: Any, body: Any) -> None:
    assert outcome(routing_key, body) is None


@FUZZ
@given(secret=st.text(max_size=20), body=st.binary(max_size=100), signature=st.one_of(
    st.none(), st.text(max_size=70), st.binary(max_size=70), st.integers(),
    st.lists(st.integers(), max_size=3),
))
def test_verify_answers_a_bool_for_any_signature(secret: str, body: bytes, signature: Any) -> None:
    assert verify(secret, body, signature) in (True, False)
    if secret:
        assert verify(secret, body, sign(secret, body)) is True


def test_verify_accepts_only_the_signature_of_these_bytes_under_this_secret() -> None:
    body = json.dumps(good_body("goods.returned")).encode()
    signature = sign("s3cret", body)
    assert len(signature) == 64 and signature == signature.lower()
    assert verify("s3cret", body, signature) and verify("s3cret", body, f" {signature.upper()} ".encode())
    assert not verify("other", body, signature)
    assert not verify("s3cret", body + b" ", signature)
    assert not verify("", body, sign("", body))
