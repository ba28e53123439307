"""A schema's load for the bodies it accepts, compiled once to plain function calls.

Why: marshmallow's ``Schema.load`` spends most of its time on machinery a
valid body does not need (an error store, hooks looked up per field, partial
loading, a nested ``load`` per part): ~120 µs for a complaint, a third of the
intake's CPU per message, for what the fields' own checks do in ~20. The
intake admits thousands a second in one process, so it pays that on every one.

The compiled load runs the *same* field objects — their ``_deserialize`` and
their validators — in the same order, and returns the same dict. It never
words an error: at the first doubt (a missing required field, a ``null`` where
none is allowed, a value a field or validator refuses, a shape it was not
compiled for) it raises `Unsure`, and the caller loads the body through
marshmallow, whose messages are the ones an operator reads in the rejected
store. So a valid body costs the fast path, and an invalid one costs both and
is refused exactly as before. ``tests/messages/test_compiled.py`` holds the
two to the same answers on generated bodies.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields
from marshmallow.utils import missing
from marshmallow.validate import Validator

from messages.fields import BoundedList

Load = Callable[[Mapping[str, Any]], dict[str, Any]]
Read = Callable[[Any], Any]

#: The hooks a compiled load runs itself (schema-level validators); any other kind of hook on a
#: schema makes `compile_load` refuse it rather than silently skip it.
_SUPPORTED_HOOKS = frozenset({"validates_schema"})


class Unsure(Exception):
    """The compiled load cannot vouch for this body: load it through marshmallow instead."""


def compile_load(schema: Schema) -> Load:
    """The load of `schema` (``unknown=EXCLUDE``) for bodies it accepts; raises `Unsure` for any other."""
    _check_supported(schema)
    entries = tuple(_entry(name, field) for name, field in schema.load_fields.items())
    checks = _schema_validators(schema)

    def load(document: Mapping[str, Any]) -> dict[str, Any]:
        loaded: dict[str, Any] = {}
        for key, attribute, read, required, allow_none, default in entries:
            value = document.get(key, missing)
            if value is missing:
                if required:
                    raise Unsure
                if default is not missing:
                    loaded[attribute] = default() if callable(default) else default
            elif value is None:
                if not allow_none:
                    raise Unsure
                loaded[attribute] = None
            else:
                loaded[attribute] = read(value)
        for check in checks:
            check(loaded, document)
        return loaded

    return load


def _check_supported(schema: Schema) -> None:
    if schema.unknown != EXCLUDE:  # RAISE would refuse unknown keys, INCLUDE keep them: neither is compiled
        raise TypeError(f"{type(schema).__name__}: only unknown=EXCLUDE schemas are compiled")
    hooks = {kind for kind, registered in schema._hooks.items() if registered}
    if hooks - _SUPPORTED_HOOKS:
        raise TypeError(f"{type(schema).__name__}: hooks {sorted(hooks - _SUPPORTED_HOOKS)} are not compiled")


def _entry(name: str, field: fields.Field) -> tuple[str, str, Read, bool, bool, Any]:
    if field.pre_load or field.post_load:  # marshmallow 4's per-field functions
        raise TypeError(f"field {name!r}: pre_load/post_load functions are not compiled")
    key = field.data_key if field.data_key is not None else name
    attribute = field.attribute or name
    return key, attribute, _reader(field), field.required, field.allow_none, field.load_default


def _reader(field: fields.Field) -> Read:
    """What turns a present, non-null value into the field's output, or raises `Unsure`."""
    if isinstance(field, fields.Nested):
        return _nested_reader(field)
    if isinstance(field, fields.List):
        return _list_reader(field)
    if isinstance(field, (fields.Dict, fields.Tuple, fields.Pluck, fields.Method, fields.Function)):
        raise TypeError(f"{type(field).__name__} fields are not compiled")
    deserialize = field._deserialize
    validators = tuple(field.validators)

    def read(value: Any) -> Any:
        try:
            output = deserialize(value, None, None)
            for validator in validators:
                # marshmallow's rule: a plain function refuses by returning False, a Validator by raising
                if validator(output) is False and not isinstance(validator, Validator):
                    raise Unsure
        except ValidationError:
            raise Unsure from None
        return output

    return read


def _nested_reader(field: fields.Nested) -> Read:
    if field.many or field.unknown not in (None, EXCLUDE) or field.only or field.exclude:
        raise TypeError("only plain nested schemas (one object, unknown=EXCLUDE) are compiled")
    inner = compile_load(field.schema)
    validators = tuple(field.validators)
    if validators:
        raise TypeError("validators on a Nested field are not compiled")

    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise Unsure
        return inner(value)

    return read


def _list_reader(field: fields.List) -> Read:
    if field.validators:
        raise TypeError("validators on a List field are not compiled")
    item = field.inner
    read_item = _reader(item)
    item_allows_none = item.allow_none
    low, high = (field.min_items, field.max_items) if isinstance(field, BoundedList) else (0, None)

    def read(value: Any) -> list[Any]:
        if type(value) is not list or len(value) < low or (high is not None and len(value) > high):
            raise Unsure
        out = []
        for each in value:
            if each is None:
                if not item_allows_none:
                    raise Unsure
                out.append(None)
            else:
                out.append(read_item(each))
        return out

    return read


def _schema_validators(schema: Schema) -> tuple[Callable[[dict[str, Any], Mapping[str, Any]], None], ...]:
    """The schema's ``@validates_schema`` methods, called as marshmallow calls them on one object."""
    checks = []
    for attr_name, hook_many, options in schema._hooks["validates_schema"]:
        if hook_many:
            continue  # marshmallow runs these on a collection only (``many=True``)
        checks.append(_schema_check(getattr(schema, attr_name), options.get("pass_original", False)))
    return tuple(checks)


def _schema_check(validator: Callable[..., Any], pass_original: bool) -> Callable[[dict[str, Any], Mapping[str, Any]], None]:
    def check(loaded: dict[str, Any], document: Mapping[str, Any]) -> None:
        try:
            if pass_original:
                validator(loaded, document, partial=None, many=False, unknown=None)
            else:
                validator(loaded, partial=None, many=False, unknown=None)
        except ValidationError:
            raise Unsure from None

    return check
