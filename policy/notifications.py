"""Notification templates: what buyers and merchants are told, in Chinese and English.

The wording lives in ``notifications.toml`` beside this module (package data),
so it changes without a code change; *which* template goes to whom, and when,
is decided in `models.notification`. The file is checked completely when it is
first read — every template the code can send, for each of its recipients, in
every language, using only the placeholders the code fills in — and a file
that does not pass raises `TemplateError` listing every problem, like the policy.
"""
from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Mapping

from policy.model import LANGUAGES

__all__ = ["AUDIENCE", "FIELDS", "OUTCOMES", "Rendered", "TemplateError", "Templates", "format_fields",
           "load_templates", "packaged_templates"]

#: Every template the code sends, and who may receive it.
AUDIENCE: dict[str, tuple[str, ...]] = {
    "settlement": ("user", "merchant"),          # negotiation outcomes (the {outcome} phrase)
    "evidence_requested": ("user", "merchant"),  # with its deadline
    "judgment": ("user", "merchant"),
    "payment_awaited": ("merchant",),            # transfer offline and upload a voucher
    "goods_return": ("user",),                   # return_and_refund: send the goods back first
    "refund": ("user",),
    "complaint_fee": ("user",),
    "closed": ("user", "merchant"),
    "survey": ("user",),                         # after closing or resolution
}
#: The negotiation outcomes ``settlement`` describes (the ``[outcomes]`` phrases).
OUTCOMES: tuple[str, ...] = ("direct_refund", "negotiated_reject", "intercept_48h", "resolved", "escalated")
#: The placeholders the code fills in; a template may use any of them and nothing else.
FIELDS: frozenset[str] = frozenset({
    "ref", "ticket_id", "order_id", "deadline", "items", "round", "liability", "remedy", "amount", "outcome",
    "survey_url", "survey_code"})


class TemplateError(Exception):
    """The templates file does not pass its check; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("notification templates have problems:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


@dataclass(frozen=True)
class Templates:
    """The checked templates: ``(template, recipient, language)`` -> (subject, body)."""

    texts: dict[tuple[str, str, str], tuple[str, str]]
    #: ``(outcome, language)`` -> phrase.
    outcomes: dict[tuple[str, str], str]

    def render(self, template: str, recipient: str, language: str, facts: Mapping[str, str]) -> Rendered:
        """Fill a template in. ``facts["outcome"]`` names an outcome, whose phrase is filled in first;
        a placeholder without a fact renders empty."""
        values = {name: str(facts.get(name, "")) for name in FIELDS}
        if values["outcome"]:
            values["outcome"] = self.outcomes[(values["outcome"], language)].format_map(values)
        subject, body = self.texts[(template, recipient, language)]
        # A header is one line whatever a fact holds (an upstream reference with a line break).
        return Rendered(" ".join(subject.format_map(values).split()), body.format_map(values))


def format_fields(text: str) -> set[str] | None:
    """The ``{name}`` placeholders of `text`; None when its braces do not pair or a placeholder is
    more than a plain name (``{0}``, ``{a.b}``, ``{a[0]}``, ``{a!r}``, ``{a:>5}``)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return None
    names: set[str] = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            return None
        names.add(name)
    return names


def load_templates(text: str) -> Templates:
    """Read and check a templates file; `TemplateError` lists every problem."""
    problems: list[str] = []
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TemplateError([f"not valid TOML ({error})"]) from error
    for key in data:
        if key not in ("templates", "outcomes"):
            problems.append(f"{key}: unknown table (expected templates, outcomes)")
    texts = _texts(data.get("templates"), problems)
    outcomes = _outcomes(data.get("outcomes"), problems)
    if problems:
        raise TemplateError(problems)
    return Templates(texts, outcomes)


@cache
def packaged_templates() -> Templates:
    """The templates shipped with the package, read and checked once per process."""
    return load_templates(resources.files("policy").joinpath("notifications.toml").read_text(encoding="utf-8"))


def _texts(table: object, problems: list[str]) -> dict[tuple[str, str, str], tuple[str, str]]:
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    if not isinstance(table, dict):
        problems.append("templates: missing, or not a table")
        return found
    for name in table:
        if name not in AUDIENCE:
            problems.append(f"templates.{name}: not a template the code sends ({', '.join(AUDIENCE)})")
    for name, recipients in AUDIENCE.items():
        for recipient in recipients:
            for language in LANGUAGES:
                path = f"templates.{name}.{recipient}.{language}"
                entry = _dig(table, name, recipient, language)
                if not isinstance(entry, dict):
                    problems.append(f"{path}: missing")
                    continue
                subject, body = entry.get("subject"), entry.get("body")
                _check_text(subject, f"{path}.subject", problems, one_line=True)
                _check_text(body, f"{path}.body", problems, one_line=False)
                for key in entry:
                    if key not in ("subject", "body"):
                        problems.append(f"{path}.{key}: unknown key (expected subject, body)")
                if isinstance(subject, str) and isinstance(body, str):
                    found[(name, recipient, language)] = (subject, body)
    return found


def _outcomes(table: object, problems: list[str]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    if not isinstance(table, dict):
        problems.append("outcomes: missing, or not a table")
        return found
    for outcome in table:
        if outcome not in OUTCOMES:
            problems.append(f"outcomes.{outcome}: not an outcome the code sends ({', '.join(OUTCOMES)})")
    for outcome in OUTCOMES:
        for language in LANGUAGES:
            phrase = _dig(table, outcome, language)
            path = f"outcomes.{outcome}.{language}"
            if phrase is None:
                problems.append(f"{path}: missing")
                continue
            _check_text(phrase, path, problems, one_line=False, fields=FIELDS - {"outcome"})
            if isinstance(phrase, str):
                found[(outcome, language)] = phrase
    return found


def _dig(table: dict, *keys: str) -> object:
    node: object = table
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _check_text(value: object, path: str, problems: list[str], *, one_line: bool,
                fields: frozenset[str] = FIELDS) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{path}: must be non-empty text")
        return
    if one_line and ("\n" in value or "\r" in value):
        problems.append(f"{path}: must be one line")
    used = format_fields(value)
    if used is None:
        problems.append(f"{path}: braces must pair and a placeholder must be a plain {{name}}")
    elif used - fields:
        problems.append(f"{path}: unknown placeholder {', '.join(sorted(used - fields))} "
                        f"(known: {', '.join(sorted(fields))})")
