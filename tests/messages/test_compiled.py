"""The compiled intake load says what marshmallow says, or that it is unsure.

`messages.compiled` is what the intake runs on every body; marshmallow loads only what the
compiled load is unsure of. So wherever the compiled load answers, its answer must be the
one marshmallow gives — the same dict, nothing more lenient — and for the bodies upstream
really sends it must answer (or it saves nothing).
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import (
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validates_schema,
)

from messages import INTAKE_ROUTING_KEYS
from messages.compiled import Unsure, compile_load
from messages.intake import _COMPILED, _INSTANCES

from .test_intake_schemas import good_body
from .test_parse_fuzz import FUZZ, json_values, mutate, paths_of


def marshmallow_load(routing_key: str, document: Any) -> dict[str, Any] | None:
    try:
        return _INSTANCES[routing_key].load(document)
    except ValidationError:
        return None


def compiled_load(routing_key: str, document: Any) -> dict[str, Any] | None | type[Unsure]:
    try:
        return _COMPILED[routing_key](document)
    except Unsure:
        return Unsure


@pytest.mark.parametrize("routing_key", INTAKE_ROUTING_KEYS)
def test_every_contract_body_loads_on_the_compiled_path_to_what_marshmallow_loads(routing_key: str) -> None:
    body = good_body(routing_key)
    loaded = marshmallow_load(routing_key, body)
    assert loaded is not None and compiled_load(routing_key, body) == loaded


def test_defaults_are_filled_in_and_unknown_fields_dropped_as_marshmallow_does() -> None:
    body = good_body("complaint.submitted")
    del body["evidence"], body["contact"]
    body["added_by_upstream_later"] = {"x": 1}
    loaded = compiled_load("complaint.submitted", body)
    assert loaded == marshmallow_load("complaint.submitted", body)
    assert loaded["negotiation"] == "pending" and loaded["evidence"] == [] and "added_by_upstream_later" not in loaded


@pytest.mark.parametrize("routing_key", INTAKE_ROUTING_KEYS)
@FUZZ
@given(data=st.data(), replacement=json_values, delete=st.booleans())
def test_a_body_with_one_field_changed_loads_the_same_or_is_refused_by_both(
    routing_key: str, data: st.DataObject, replacement: Any, delete: bool,
) -> None:
    body = json.loads(json.dumps(good_body(routing_key)))
    path = data.draw(st.sampled_from(paths_of(body)))
    document = mutate(body, path, replacement, delete)
    fast, slow = compiled_load(routing_key, document), marshmallow_load(routing_key, document)
    if slow is None:
        assert fast is Unsure, "the compiled load accepted a body marshmallow refuses"
    else:  # unsure about a valid JSON body would cost every such body a second load
        assert fast == slow


def test_a_claim_above_the_order_is_unsure_so_marshmallow_words_the_refusal() -> None:
    body = good_body("complaint.submitted")
    body["claimed_amount"] = body["order"]["amount"] + 1
    assert compiled_load("complaint.submitted", body) is Unsure
    assert marshmallow_load("complaint.submitted", body) is None


def test_a_schema_it_cannot_compile_faithfully_is_refused_when_compiled() -> None:
    class Keeps(Schema):
        class Meta:
            unknown = INCLUDE
        x = fields.Integer()

    class Transforms(Schema):
        class Meta:
            unknown = "exclude"
        x = fields.Integer()

        @post_load
        def shout(self, data: dict, **kwargs: Any) -> dict:
            return data

    for schema in (Keeps(), Transforms()):
        with pytest.raises(TypeError):
            compile_load(schema)


def test_a_schema_validator_refusing_makes_it_unsure() -> None:
    class Pair(Schema):
        class Meta:
            unknown = "exclude"
        low = fields.Integer(required=True)
        high = fields.Integer(required=True)

        @validates_schema
        def ordered(self, data: dict, **kwargs: Any) -> None:
            if data["low"] > data["high"]:
                raise ValidationError("low above high")

    load = compile_load(Pair())
    assert load({"low": 1, "high": 2}) == {"low": 1, "high": 2}
    with pytest.raises(Unsure):
        load({"low": 3, "high": 2})
