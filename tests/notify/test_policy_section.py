"""``[notifications]`` in the policy: optional, log-only by default, checked like every other section."""
from __future__ import annotations

import tomllib

import pytest

from policy import PolicyError, default_policy_dict, dump_policy, load_policy, policy_from_dict
from disputes.settings import NOTIFY_MAX_BACKOFF_MS, NOTIFY_MIN_BACKOFF_MS, QUEUES, REDRIVE_AFTER_SECONDS


def problems_of(notifications: object) -> list[str]:
    data = default_policy_dict()
    data["notifications"] = notifications
    with pytest.raises(PolicyError) as raised:
        policy_from_dict(data)
    return raised.value.problems


def test_the_default_needs_nothing_external_log_only_in_chinese() -> None:
    n = load_policy().notifications
    assert n.channels == {"user": ("log",), "merchant": ("log",)}
    assert (n.language, n.max_attempts, n.webhook.url) == ("zh", 5, "")


def test_a_policy_without_the_section_gets_the_defaults() -> None:
    data = default_policy_dict()
    del data["notifications"]
    assert policy_from_dict(data).notifications == load_policy().notifications


def test_a_bad_section_lists_every_problem_at_once() -> None:
    problems = problems_of({
        "language": "fr", "max_attempts": 0, "survey_url": "https://s.example/{code}/{secret}",
        "channels": {"user": ["smtp", "sms"], "buyer": ["log"]},
        "smtp": {"host": "mail relay", "port": 70000, "from": "nobody", "timeout": "5m"},
        "webhook": {"url": "ftp://hooks.example"}, "colour": "blue"})
    for fragment in ("notifications.colour: unknown key", "notifications.language: 'fr' is not a language",
                     "notifications.max_attempts: must be between 1 and 20", "notifications.survey_url: may only use",
                     "notifications.channels.buyer: unknown key", "notifications.channels.user: must be a list of",
                     "notifications.smtp.host: must be a host name", "notifications.smtp.port: must be between",
                     "notifications.smtp.from: must be an email address",
                     "notifications.smtp.timeout: must be between 1s and 60s",
                     "notifications.webhook.url: must be an http(s) URL"):
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


def test_a_webhook_channel_needs_a_url() -> None:
    assert problems_of({"channels": {"merchant": ["webhook"]}}) == [
        'notifications.webhook.url: required when a recipient\'s channels include "webhook"']


def test_a_configured_section_dumps_and_loads_back_the_same() -> None:
    data = default_policy_dict()
    data["notifications"] = {"language": "en", "max_attempts": 8, "channels": {"user": ["smtp", "log"],
                                                                               "merchant": []},
                             "smtp": {"host": "relay.internal", "port": 2525, "from": "disputes@shop.example"},
                             "webhook": {"url": "https://hooks.example/disputes?k=1", "timeout": "3s"}}
    policy = policy_from_dict(data)
    assert policy.notifications.channels == {"user": ("smtp", "log"), "merchant": ()}
    assert policy_from_dict(tomllib.loads(dump_policy(policy))) == policy


def test_the_notify_queue_retries_as_the_policy_says_and_backs_off_inside_the_redrive_window(app) -> None:
    assert "notify" in QUEUES
    options = app.actors["notify"].options
    assert options["max_retries"] == app.policy.notifications.max_attempts - 1
    assert (options["min_backoff"], options["max_backoff"]) == (NOTIFY_MIN_BACKOFF_MS, NOTIFY_MAX_BACKOFF_MS)
    assert NOTIFY_MAX_BACKOFF_MS < REDRIVE_AFTER_SECONDS * 1000


# -- [notifications.smtp]: TLS and the login ---------------------------------------------------

def test_smtp_tls_and_login_mistakes_are_all_listed_at_once() -> None:
    problems = problems_of({"smtp": {"tls": "ssl", "username": "bot", "password_env": "not a name", "ca_file": 5,
                                     "allow_plaintext_login": "yes"}})
    for fragment in ('notifications.smtp.tls: must be one of none, starttls, implicit, not \'ssl\'',
                     "notifications.smtp.password_env: must name an environment variable",
                     "notifications.smtp.allow_plaintext_login: must be true or false",
                     "notifications.smtp.ca_file: must be the path of a PEM file"):
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


@pytest.mark.parametrize("smtp, problem", [
    ({"username": "bot", "password_env": "OP_SMTP_PASSWORD"},
     ('notifications.smtp.tls: a login over plain SMTP sends the password in clear: set tls = "starttls" or '
      '"implicit" (or allow_plaintext_login = true for a relay on this host)')),
    ({"tls": "starttls", "username": "bot"},
     ("notifications.smtp.password_env: required with a username: the environment variable that holds the "
      "password (the password itself never goes in the policy file)")),
    ({"tls": "starttls", "password_env": "OP_SMTP_PASSWORD"},
     "notifications.smtp.username: required with password_env (OP_SMTP_PASSWORD): the login name"),
    ({"ca_file": "/etc/ssl/relay.pem"},
     "notifications.smtp.ca_file: verifies the relay's certificate, which only TLS shows: set tls too"),
    ({"tls": "starttls", "password": "hunter2"},
     ("notifications.smtp.password: unknown key (expected one of host, port, from, timeout, tls, username, "
      "password_env, ca_file, allow_plaintext_login)")),
])
def test_a_login_goes_over_tls_and_names_where_its_password_is(smtp: dict, problem: str) -> None:
    assert problems_of({"smtp": smtp}) == [problem]


def test_a_clear_login_to_a_relay_on_this_host_is_allowed_when_the_policy_says_so() -> None:
    data = default_policy_dict()
    data["notifications"] = {"smtp": {"username": "bot", "password_env": "OP_SMTP_PASSWORD",
                                      "allow_plaintext_login": True}}
    smtp = policy_from_dict(data).notifications.smtp
    assert (smtp.tls, smtp.username, smtp.allow_plaintext_login) == ("none", "bot", True)


@pytest.mark.parametrize("tls, port", [("none", 25), ("starttls", 587), ("implicit", 465)])
def test_each_tls_mode_has_its_usual_port_unless_the_policy_names_one(tls: str, port: int) -> None:
    data = default_policy_dict()
    data["notifications"] = {"smtp": {"host": "smtp.example.com", "tls": tls}}
    assert policy_from_dict(data).notifications.smtp.port == port
    data["notifications"] = {"smtp": {"host": "smtp.example.com", "tls": tls, "port": 2525}}
    assert policy_from_dict(data).notifications.smtp.port == 2525


def test_a_tls_relay_with_a_login_dumps_and_loads_back_the_same() -> None:
    data = default_policy_dict()
    data["notifications"] = {"channels": {"user": ["smtp"], "merchant": ["smtp", "log"]},
                             "smtp": {"host": "smtp.example.com", "tls": "starttls", "username": "disputes",
                                      "password_env": "OP_SMTP_PASSWORD", "ca_file": "/etc/ssl/corp-ca.pem"}}
    policy = policy_from_dict(data)
    shown = dump_policy(policy)
    assert policy_from_dict(tomllib.loads(shown)) == policy
    assert 'password_env = "OP_SMTP_PASSWORD"' in shown and 'tls = "starttls"' in shown
