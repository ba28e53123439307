"""`docs/contract.md` is the contract other teams read: these tests keep it and the code in step.

Each check goes both ways where it can — what the code has, the document lists; what the document
lists, the code has — so a renamed routing key, a new route, a removed command or a new policy key
fails here until the document follows. The document's conventions, which the checks rely on:

- every wire example is a ```json block right after a marker line ``<!-- example: ROUTING_KEY -->``
  (``http`` for an HTTP body); an intake example sits under its heading ``### <routing key>``;
- routes are written as inline code ``METHOD /path`` (``{name}`` for a path parameter);
- commands are written as inline code starting ``disputes <command> [<subcommand>]``;
- a policy key is written as its full dotted path, or on one line with its table's path.

Fast: no servers, no network (the Flask app is built on a SQLite file in a temporary folder).
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from marshmallow import fields as ma_fields

import messages
from messages.events import (
    LEDGER_KINDS, TICKET_STATES, LedgerEvent, NotifyEvent, TicketEvent, check_event_body,
)
from messages.fields import TicketRefSchema

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "contract.md"
DEFAULT_POLICY = ROOT / "policy" / "default_policy.toml"
NOTIFICATION_TEMPLATES = ROOT / "policy" / "notifications.toml"

EVENT_FAMILIES = ("ticket", "ledger", "notify")
#: Routing keys of ``op.events`` beyond the three checked families (no body check exists for them).
OTHER_EVENT_KEYS = ("sla.warning", "sla.breached", "routing.no_agent")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: The ticket reference every follow-up shares: one of its two forms is enough in an example.
TICKET_REF_FIELDS = frozenset(TicketRefSchema._declared_fields)


# ---- reading the document -------------------------------------------------------------------

@dataclass(frozen=True)
class Heading:
    level: int
    title: str  # without the #s and without backticks
    line: int


@dataclass(frozen=True)
class Example:
    key: str
    text: str
    line: int
    heading: Heading | None  # the nearest heading above the marker


_MARKER = re.compile(r"^<!--\s*example:\s*(\S+)\s*-->\s*$")
_FENCE = re.compile(r"^```")


class Doc:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines()
        self.headings: list[Heading] = []
        self.examples: list[Example] = []
        self.unmarked_json: list[int] = []
        self.prose_lines: list[str] = []  # lines outside fenced blocks
        self._read()

    def _read(self) -> None:
        in_fence, fence_is_json, body, marker, marker_line, heading = False, False, [], None, 0, None
        pending_marker: tuple[str, int] | None = None
        for number, line in enumerate(self.lines, 1):
            if in_fence:
                if _FENCE.match(line):
                    if fence_is_json:
                        if marker is None:
                            self.unmarked_json.append(number)
                        else:
                            self.examples.append(Example(marker, "\n".join(body), marker_line, heading))
                    in_fence, body, marker = False, [], None
                else:
                    body.append(line)
                continue
            if _FENCE.match(line):
                in_fence, fence_is_json = True, line.strip() == "```json"
                marker, marker_line = pending_marker if pending_marker else (None, 0)
                pending_marker = None
                continue
            self.prose_lines.append(line)
            found = _MARKER.match(line.strip())
            if found:
                pending_marker = (found.group(1), number)
                continue
            if line.strip():
                pending_marker = None  # a marker must be right above its block
            head = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
            if head:
                heading = Heading(len(head.group(1)), head.group(2).replace("`", "").strip(), number)
                self.headings.append(heading)
        assert not in_fence, "docs/contract.md has an unclosed ``` block"

    @property
    def spans(self) -> list[str]:
        """Inline code spans outside fenced blocks."""
        return [span for line in self.prose_lines for span in re.findall(r"`([^`]+)`", line)]

    def chapter(self, number: int) -> str:
        """The prose of ``## <number>. …`` up to the next level-2 heading."""
        return self._between(lambda h: h.level == 2 and h.title.startswith(f"{number}."), 2)

    def section(self, title: str, level: int = 3) -> str:
        """The prose under the heading ``title`` up to the next heading of its level or above."""
        return self._between(lambda h: h.level == level and h.title == title, level)

    def _between(self, match, level: int) -> str:
        start = next((h for h in self.headings if match(h)), None)
        if start is None:
            return ""
        end = next((h.line for h in self.headings if h.line > start.line and h.level <= level),
                   len(self.lines) + 1)
        return "\n".join(self.lines[start.line - 1:end - 1])


def spans_of(text: str) -> set[str]:
    without_fences = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return set(re.findall(r"`([^`\n]+)`", without_fences))


@pytest.fixture(scope="module")
def doc() -> Doc:
    assert DOC_PATH.exists(), "docs/contract.md is missing"
    return Doc(DOC_PATH.read_text(encoding="utf-8"))


def test_every_json_block_is_a_marked_example(doc: Doc) -> None:
    """No example escapes the checks below: every ```json block carries its routing key."""
    assert not doc.unmarked_json, f"```json blocks without an <!-- example: KEY --> marker at lines {doc.unmarked_json}"
    known = set(messages.INTAKE_ROUTING_KEYS) | {"http"}
    for example in doc.examples:
        family = example.key.split(".", 1)[0]
        assert example.key in known or (family in EVENT_FAMILIES and "." in example.key), \
            f"line {example.line}: an example for {example.key!r}, which is no intake or op.events routing key"
        json.loads(example.text)  # at least valid JSON, whatever it is


# ---- 1. intake ----------------------------------------------------------------------------------

def intake_examples(doc: Doc) -> dict[str, list[Example]]:
    found: dict[str, list[Example]] = {}
    for example in doc.examples:
        if example.key in messages.INTAKE_ROUTING_KEYS:
            found.setdefault(example.key, []).append(example)
    return found


@pytest.mark.parametrize("routing_key", messages.INTAKE_ROUTING_KEYS)
def test_every_intake_routing_key_has_a_section_with_an_example(doc: Doc, routing_key: str) -> None:
    assert doc.section(routing_key), f"no heading '### {routing_key}' in docs/contract.md"
    examples = intake_examples(doc).get(routing_key)
    assert examples, f"no example body for {routing_key} (<!-- example: {routing_key} --> then ```json)"
    for example in examples:
        assert example.heading is not None and example.heading.title == routing_key, \
            f"line {example.line}: the {routing_key} example is not under its heading '### {routing_key}'"


@pytest.mark.parametrize("routing_key", messages.INTAKE_ROUTING_KEYS)
def test_every_intake_example_is_accepted_by_the_parser_and_shows_every_field(doc: Doc, routing_key: str) -> None:
    schema = messages.SCHEMAS[routing_key]
    declared = set(schema._declared_fields)
    for example in intake_examples(doc).get(routing_key, []):
        try:
            messages.parse_intake(routing_key, example.text.encode("utf-8"))
        except messages.IntakeInvalid as invalid:
            pytest.fail(f"line {example.line}: the {routing_key} example is rejected: {invalid}")
        body = json.loads(example.text)
        wanted = declared - TICKET_REF_FIELDS if issubclass(schema, TicketRefSchema) else declared
        missing = sorted(wanted - set(body))
        assert not missing, f"line {example.line}: a full {routing_key} example shows every field; missing {missing}"
        if issubclass(schema, TicketRefSchema):
            assert "ticket_id" in body or {"source", "external_ref"} <= set(body)
        unknown = sorted(set(body) - declared)
        assert not unknown, f"line {example.line}: {routing_key} has no fields {unknown} (the intake ignores them)"


@pytest.mark.parametrize("routing_key", messages.INTAKE_ROUTING_KEYS)
def test_every_intake_field_is_named_in_its_section(doc: Doc, routing_key: str) -> None:
    section = spans_of(doc.section(routing_key))
    intake_chapter = spans_of(doc.chapter(1))
    for name, field in messages.SCHEMAS[routing_key]._declared_fields.items():
        assert name in section or name == "schema_version" and name in intake_chapter, \
            f"### {routing_key} does not name its field `{name}`"
        if isinstance(field, ma_fields.Nested):
            for sub in field.schema.fields:
                assert f"{name}.{sub}" in section, f"### {routing_key} does not name `{name}.{sub}`"
        if isinstance(field, ma_fields.List) and isinstance(field.inner, ma_fields.Nested):
            for sub in field.inner.schema.fields:
                assert sub in intake_chapter, f"the intake chapter does not describe `{sub}` of `{name}` items"


def test_the_document_names_no_intake_routing_key_that_does_not_exist(doc: Doc) -> None:
    keys = set(messages.INTAKE_ROUTING_KEYS)
    prefixes = {key.split(".", 1)[0] for key in keys}
    policy = tomllib.loads(DEFAULT_POLICY.read_text("utf-8"))
    policy_paths = {".".join(path) for path in _all_policy_paths(policy)}
    for span in doc.spans:
        if re.fullmatch(r"[a-z_]+\.[a-z_]+", span) and span.split(".", 1)[0] in prefixes:
            assert span in keys or span in policy_paths, \
                f"docs/contract.md names `{span}`, which is no intake routing key"
    for heading in doc.headings:
        if heading.level == 3 and re.fullmatch(r"[a-z_]+\.[a-z_]+", heading.title) \
                and heading.title.split(".", 1)[0] in prefixes:
            assert heading.title in keys, f"heading '### {heading.title}' is no intake routing key"


# ---- 3. events --------------------------------------------------------------------------------

def test_every_ledger_kind_is_documented_and_no_other(doc: Doc) -> None:
    spans = set(doc.spans)
    for kind in LEDGER_KINDS:
        assert f"ledger.{kind}" in spans, f"`ledger.{kind}` is not documented"
    named = {span.split(".", 1)[1] for span in spans if re.fullmatch(r"ledger\.[a-z_]+", span)}
    stray = sorted(named - set(LEDGER_KINDS))
    assert not stray, f"docs/contract.md names ledger kinds that do not exist: {stray}"


def test_event_examples_keep_the_contract(doc: Doc) -> None:
    seen: set[str] = set()
    for example in doc.examples:
        family, _, suffix = example.key.partition(".")
        if family not in EVENT_FAMILIES:
            continue
        body = json.loads(example.text)
        problems = check_event_body(example.key, body)
        assert problems == {}, f"line {example.line}: the {example.key} example breaks the contract: {problems}"
        named = {"ticket": "to_state", "ledger": "kind", "notify": "template"}[family]
        assert body[named] == suffix, f"line {example.line}: routing key {example.key} but {named} {body[named]!r}"
        if family == "ticket":
            assert isinstance(body.get("version"), int), f"line {example.line}: a ticket event carries `version`"
        seen.add(family)
    assert seen == set(EVENT_FAMILIES), f"docs/contract.md lacks an example of {sorted(set(EVENT_FAMILIES) - seen)}"


def test_event_fields_states_and_templates_are_documented(doc: Doc) -> None:
    chapter = spans_of(doc.chapter(3))
    for schema in (TicketEvent, LedgerEvent, NotifyEvent):
        for name in schema._declared_fields:
            assert name in chapter, f"the events chapter does not name `{name}` of {schema.__name__}"
    assert "version" in chapter
    for state in TICKET_STATES:
        assert state in chapter, f"the events chapter does not list the state `{state}`"
    templates = set(tomllib.loads(NOTIFICATION_TEMPLATES.read_text("utf-8"))["templates"])
    for template in templates:
        assert f"notify.{template}" in chapter, f"`notify.{template}` is not documented"
    named = {span.split(".", 1)[1] for span in doc.spans if re.fullmatch(r"notify\.[a-z_]+", span)}
    assert named <= templates, f"docs/contract.md names notify templates that do not exist: {sorted(named - templates)}"
    for key in OTHER_EVENT_KEYS:
        assert key in chapter, f"`{key}` (published on op.events) is not documented"


# ---- 4. HTTP ----------------------------------------------------------------------------------

def _normal(path: str) -> str:
    """``/tickets/<int:ticket_id>`` and ``/tickets/{id}`` both as ``/tickets/{}``."""
    return re.sub(r"<[^>]+>|\{[^}]*\}", "{}", path.split("?", 1)[0])


@pytest.fixture(scope="module")
def http_routes(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """(every route of the API and the pages but static files, every route including them), each
    as ``METHOD /path``. The app is built as the desk tests build it."""
    import models
    from desk import create_api
    from disputes.settings import Settings
    from disputes.wiring import build_app

    folder = tmp_path_factory.mktemp("contract")
    app = build_app(Settings(database_url=f"sqlite:///{folder}/doc.db"), broker=None)
    try:
        models.init_schema()
        api = create_api(app)
        flask_apps = [api, api.extensions["disputes.web"]]
        required, existing = set(), set()
        for flask_app in flask_apps:
            for rule in flask_app.url_map.iter_rules():
                for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                    route = f"{method} {_normal(rule.rule)}"
                    existing.add(route)
                    if rule.endpoint != "static" and not rule.endpoint.endswith(".static"):
                        required.add(route)
        return required, existing
    finally:
        if not app.db.is_closed():
            app.db.close()


def documented_routes(doc: Doc) -> set[str]:
    pattern = re.compile(rf"^({'|'.join(HTTP_METHODS)}) (/\S*)$")
    return {f"{m.group(1)} {_normal(m.group(2))}" for span in doc.spans if (m := pattern.match(span))}


def test_every_http_route_is_documented(doc: Doc, http_routes: tuple[set[str], set[str]]) -> None:
    required, _ = http_routes
    missing = sorted(required - documented_routes(doc))
    assert not missing, f"routes of the app missing from docs/contract.md: {missing}"


def test_every_documented_http_route_exists(doc: Doc, http_routes: tuple[set[str], set[str]]) -> None:
    _, existing = http_routes
    stray = sorted(documented_routes(doc) - existing)
    assert not stray, f"docs/contract.md documents routes the app does not have: {stray}"


# ---- 5. CLI -----------------------------------------------------------------------------------

def cli_commands() -> dict[tuple[str, ...], click.Command]:
    """Every command and subcommand of `disputes`, the tools' verbs (entry points) included."""
    from disputes.cli import main

    found: dict[tuple[str, ...], click.Command] = {}

    def walk(group: click.Group, path: tuple[str, ...], ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, f"`disputes {' '.join(path + (name,))}` is listed but does not load"
            found[path + (name,)] = command
            if isinstance(command, click.Group):
                walk(command, path + (name,), click.Context(command, info_name=name, parent=ctx))

    walk(main, (), click.Context(main, info_name="disputes"))
    return found


def documented_commands(doc: Doc) -> list[list[str]]:
    """The words after ``disputes`` of each inline span naming a command (up to the first argument)."""
    named = []
    for span in doc.spans:
        if not span.startswith("disputes "):
            continue
        words = []
        for word in span.split()[1:]:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", word):
                break
            words.append(word)
        named.append(words)
    return named


def test_every_cli_command_is_documented(doc: Doc) -> None:
    documented = [tuple(words) for words in documented_commands(doc)]
    missing = [" ".join(path) for path in cli_commands()
               if not any(words[:len(path)] == path for words in documented)]
    assert not missing, f"commands of `disputes` missing from docs/contract.md: {missing}"


def test_every_documented_cli_command_exists(doc: Doc) -> None:
    commands = cli_commands()
    for words in documented_commands(doc):
        path: tuple[str, ...] = ()
        for word in words:
            parent = commands.get(path)
            if path and not isinstance(parent, click.Group):
                break  # the rest are the command's own arguments
            assert path + (word,) in commands, f"docs/contract.md names `disputes {' '.join(path + (word,))}`, " \
                                               f"which does not exist"
            path += (word,)


# ---- 6. configuration ---------------------------------------------------------------------------

def _is_label(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= {"zh", "en"}


def _all_policy_paths(data: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, value in data.items():
        paths.append(path + (key,))
        if isinstance(value, dict) and not _is_label(value):
            paths += _all_policy_paths(value, path + (key,))
    return paths


def test_every_policy_section_and_key_of_the_default_policy_is_documented(doc: Doc) -> None:
    """Tables by their dotted path (``routing.weights``); a key by its full path, or on one line
    with its table's path (a code list's codes, an option box's parameters)."""
    data = tomllib.loads(DEFAULT_POLICY.read_text("utf-8"))
    chapter = doc.chapter(6)
    spans = spans_of(chapter)
    lines = [spans_of(line) for line in chapter.splitlines()]
    problems = []
    for path in _all_policy_paths(data):
        value = data
        for part in path:
            value = value[part]
        dotted = ".".join(path)
        if isinstance(value, dict) and not _is_label(value):
            if dotted not in spans and f"[{dotted}]" not in spans:
                problems.append(f"section `{dotted}`")
            continue
        parent, key = ".".join(path[:-1]), path[-1]
        on_parent_line = any(key in line and (parent in line or f"[{parent}]" in line) for line in lines)
        if dotted not in spans and not on_parent_line:
            problems.append(f"key `{dotted}`")
    assert not problems, f"policy/default_policy.toml has what docs/contract.md does not document: {problems}"


def _environment_variables() -> set[str]:
    """What the system reads: `disputes.settings` and the CLI's environment-backed options."""
    names = set(re.findall(r"""["'](OP_[A-Z0-9_]+)["']""", (ROOT / "disputes" / "settings.py").read_text("utf-8")))
    for command in cli_commands().values():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            for name in [envvar] if isinstance(envvar, str) else envvar or []:
                if name.startswith("OP_"):
                    names.add(name)
    return names


def test_every_environment_variable_is_documented(doc: Doc) -> None:
    spans = spans_of(doc.chapter(6))
    missing = sorted(name for name in _environment_variables() if name not in spans)
    assert not missing, f"environment variables missing from docs/contract.md: {missing}"


def test_every_documented_environment_variable_is_read_somewhere(doc: Doc) -> None:
    sources = "\n".join(path.read_text("utf-8", errors="replace") for folder in
                        ("disputes", "desk", "messages", "models", "policy", "scheduler", "tools", "workers", "tests")
                        for path in (ROOT / folder).rglob("*.py"))
    named = {span for span in doc.spans if re.fullmatch(r"OP_[A-Z0-9_]+", span)}
    stray = sorted(name for name in named if name not in sources)
    assert not stray, f"docs/contract.md documents environment variables no code reads: {stray}"
