"""The API against its own ``/openapi.json``, fuzzed by schemathesis: no 5xx, nothing undocumented.

Every operation of the served OpenAPI document gets generated requests — valid ones (positive) and
ones that break the document (negative: wrong types, missing fields, out-of-range numbers, strings
where objects go) — sent in process to the WSGI app, as an agent and as a supervisor so that they
get past authentication, and each response is checked against the document: not a server error,
a status the route documents, the documented content type, a body matching the documented schema.
Examples per operation and mode are bounded so the whole module runs in well under a minute.
"""
from __future__ import annotations

import os
from typing import Iterator

import flask
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from desk import create_api
from disputes.wiring import App

from .conftest import Caller, act, add_agent, in_stage, new_ticket

#: Examples per operation and generation mode (``OP_SCHEMATHESIS_EXAMPLES`` for a longer run).
EXAMPLES = int(os.environ.get("OP_SCHEMATHESIS_EXAMPLES", "25"))


def refusals_name_the_field(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                            case: schemathesis.Case) -> bool | None:
    """A 400/422 for bad input is the SPEC's error shape and says which field is wrong."""
    if response.status_code not in (400, 422):
        return None
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"], f"no message: {error}"
    assert error["fields"] and all(isinstance(k, str) and k and v for k, v in error["fields"].items()), \
        f"a {response.status_code} that names no field: {error}"
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          refusals_name_the_field]


@pytest.fixture
def scene(app: App, agents: dict[str, Caller]) -> dict[str, Caller]:
    """Tickets in every floor stage (ids 1..n exist, so generated ids sometimes hit one), an agent
    holding some, and a supervisor."""
    supervisor = add_agent("boss", 4, supervisor=True)
    for stage in (1, 2, 3, 4):
        in_stage(app, agents, stage, assignee=f"s{stage}a" if stage > 1 else None)
    new_ticket(app, negotiation="pending")
    act(app, new_ticket(app), "take_over", agents["s1a"])
    return {"agent": agents["s1a"], "supervisor": supervisor}


@pytest.fixture
def served(app: App) -> Iterator[flask.Flask]:
    api = create_api(app)
    api.config["TESTING"] = False  # errors are answered as in production, not raised into the test
    yield api


def operations(api: flask.Flask) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", api)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 11, [op.label for op in found]
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_generated_request_gets_a_5xx_or_an_undocumented_response(served: flask.Flask, scene: dict[str, Caller],
                                                                     mode: GenerationMode) -> None:
    failures: list[str] = []
    for operation in operations(served):

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            for caller in scene.values():
                headers = dict(case.headers or {})
                headers.pop("authorization", None)
                headers["Authorization"] = f"Bearer {caller.token}"
                case.headers = headers
                response = case.call()
                case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # nothing to break: /health and /metrics take no input
            assert mode is GenerationMode.NEGATIVE and not operation.path_parameters and operation.method == "get"
        except (Exception, BaseExceptionGroup) as failure:  # collect every operation's first failure, then report them all
            failures.append(f"{operation.label}: {str(failure)[:1500]}")
    assert not failures, "\n\n".join(failures)


def test_the_document_lists_every_route_of_the_api(served: flask.Flask) -> None:
    """A route missing from /openapi.json is a route schemathesis (and every client) never sees."""
    document = served.test_client().get("/openapi.json").get_json()
    documented = {path.replace("{", "<").replace("}", ">") for path in document["paths"]}
    rules = {rule.rule.replace("<int:", "<") for rule in served.url_map.iter_rules()
             if rule.endpoint != "api-docs.openapi_json"}
    assert rules == documented
