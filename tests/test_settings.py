"""The environment of SPEC §8 and the namespace beyond it: what one deployment calls its things on a
shared broker, and how it names its database where a broker or a person can read it."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from disputes.cli import main
from disputes.settings import (
    Settings,
    database_fingerprint,
    database_label,
    settings_from_env,
)


def test_without_a_namespace_the_names_are_the_contracts() -> None:
    settings = settings_from_env({})
    assert (settings.namespace, settings.intake_queue, settings.redis_namespace) == ("", "disputes.intake", "dramatiq")


def test_a_namespace_prefixes_the_intake_queue_and_the_stage_queues_redis_keys() -> None:
    settings = settings_from_env({"OP_NAMESPACE": "staging"})
    assert (settings.intake_queue, settings.redis_namespace) == ("staging.disputes.intake", "staging.dramatiq")


@pytest.mark.parametrize("namespace", ["a.b", "stag:ing", "-x", "with space", "x" * 64])
def test_a_namespace_that_would_blur_broker_names_is_refused_naming_the_variable(namespace: str) -> None:
    with pytest.raises(ValueError, match="OP_NAMESPACE"):
        settings_from_env({"OP_NAMESPACE": namespace})


def test_init_stops_on_a_bad_namespace_with_a_message_not_a_traceback(tmp_path) -> None:
    env = {"OP_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "OP_NAMESPACE": "prod.eu"}
    result = CliRunner().invoke(main, ["init"], env=env)
    assert result.exit_code != 0 and "OP_NAMESPACE: 'prod.eu' is not a namespace" in result.output


def test_init_help_names_the_namespace_variable() -> None:
    out = CliRunner().invoke(main, ["init", "--help"], env={"COLUMNS": "100"}).output
    assert "OP_NAMESPACE" in out and "NS.disputes.intake" in out


def test_a_database_is_named_without_user_or_password() -> None:
    label = database_label("postgresql://disputes:s3cret-pw@db.internal:6432/disputes_prod")
    assert label == "postgresql://db.internal:6432/disputes_prod"
    assert "s3cret" not in database_fingerprint("postgresql://disputes:s3cret-pw@db.internal:6432/disputes_prod")


def test_one_database_has_one_fingerprint_however_its_url_spells_credentials_and_loopback() -> None:
    same = {database_fingerprint(url) for url in (
        "postgresql://root@127.0.0.1:5432/disputes", "postgres://app:pw@localhost/disputes",
        "postgresql://other:pw2@LOCALHOST:5432/disputes")}
    assert len(same) == 1


def test_other_databases_have_other_fingerprints() -> None:
    urls = ("postgresql://db-a/disputes", "postgresql://db-b/disputes", "postgresql://db-a/disputes_staging",
            "postgresql://db-a:6432/disputes", "sqlite:///disputes.db", "sqlite:///staging.db")
    assert len({database_fingerprint(url) for url in urls}) == len(urls)


def test_a_database_on_this_machine_is_named_with_the_machine() -> None:
    import socket

    assert database_label("sqlite:///disputes.db").endswith(f" on {socket.gethostname()}")
    assert database_label("postgresql://root@127.0.0.1/disputes").endswith(f" on {socket.gethostname()}")


def test_settings_built_in_code_check_the_namespace_too() -> None:
    with pytest.raises(ValueError):
        Settings(namespace="a:b")
