"""Mail that leaves the building is protected: STARTTLS or TLS from the first byte, the relay's certificate
verified, a login whose password comes from the environment and is never written anywhere.

A local aiosmtpd relay with a certificate made for the test (openssl): send (a change that mails a
party), join (the notify queue), assert (what the relay received, over what, from whom; what the
notification row and the log say).
"""
from __future__ import annotations

import base64
import email
import email.policy
import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner

import workers
from disputes.cli import main
from disputes.settings import Settings
from disputes.wiring import build_app
from models.notification import SENT, SKIPPED, Notification
from models.outbox import OutboxEvent
from policy import (
    Policy,
    PolicyError,
    SmtpPolicy,
    default_policy_dict,
    dump_policy,
    policy_from_dict,
)
from policy.durations import Duration
from tests.conftest import fast_policy_dict
from tests.notify.conftest import CONTACT, REQUEST_USER, free_port
from workers.channels import ChannelError, Delivery, SmtpChannel

USER, PASSWORD, PASSWORD_ENV = "notify-bot", "Pw-7f3c1e-not-for-logs", "OP_TEST_SMTP_PASSWORD"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (the CA file is the certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the relay's certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "relay.pem", folder / "relay.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Relay:
    """What a TLS relay received: each mail with whether it came over TLS and who had logged in."""

    port: int = 0
    mode: str = "starttls"
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    echo_password_on_refusal: bool = False

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        tls = session.ssl is not None or self.mode == "implicit"
        login = session.auth_data.login.decode() if session.authenticated else None
        self.sessions.append({"tls": tls, "login": login, "to": list(envelope.rcpt_tos)})
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        if (login, password) == (USER, PASSWORD):
            return AuthResult(success=True, auth_data=auth_data)
        if self.echo_password_on_refusal:  # a careless relay that quotes what it was sent
            return AuthResult(success=False, handled=False, message=f"535 5.7.8 {password} is not {login}'s")
        return AuthResult(success=False, handled=False)


def start_relay(mode: str, certificate: tuple[Path, Path], *, tls_offered: bool = True) -> tuple[Relay, Controller]:
    relay = Relay(port=free_port(), mode=mode)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    options: dict[str, Any] = {"authenticator": relay.authenticate, "auth_required": True}
    if mode == "implicit":
        options.update(ssl_context=context, auth_require_tls=False)  # the whole connection is TLS
    elif tls_offered:
        options.update(tls_context=context, require_starttls=True)
    controller = Controller(relay, hostname="127.0.0.1", port=relay.port, **options)
    controller.start()
    return relay, controller


@pytest.fixture
def relay(request, certificate) -> Iterator[Relay]:
    """A relay that wants TLS (``request.param``: starttls or implicit) and a login."""
    relay, controller = start_relay(getattr(request, "param", "starttls"), certificate)
    try:
        yield relay
    finally:
        controller.stop()


def smtp_settings(relay: Relay, certificate: tuple[Path, Path], **overrides: Any) -> dict[str, Any]:
    table = {"host": "127.0.0.1", "port": relay.port, "from": "disputes@shop.example", "timeout": "5s",
             "tls": relay.mode, "username": USER, "password_env": PASSWORD_ENV, "ca_file": str(certificate[0])}
    return {**table, **overrides}


@pytest.fixture
def policy(make_policy, relay, certificate, monkeypatch) -> Policy:
    """The fast policy mailing both parties through the TLS relay, the password in the environment."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return make_policy(notifications={"max_attempts": 1, "channels": {"user": ["smtp"], "merchant": ["smtp"]},
                                      "smtp": smtp_settings(relay, certificate)})


def delivery(address: str = "buyer@example.com") -> Delivery:
    return Delivery(7, "judgment", "user", "u1", "en", "Your dispute", "It was judged.", address)


def notifications(ticket_id: int, template: str) -> list[Notification]:
    return list(Notification.select().where((Notification.ticket_id == ticket_id)
                                            & (Notification.template == template)).order_by(Notification.id))


# -- the mail goes out protected ---------------------------------------------------------------

#: aiosmtpd's warning about its own settings: AUTH "without TLS" where the whole connection is TLS.
IMPLICIT_AUTH_WARNING = "ignore:Requiring AUTH while not requiring TLS"


@pytest.mark.filterwarnings(IMPLICIT_AUTH_WARNING)
@pytest.mark.parametrize("relay", ["starttls", "implicit"], indirect=True)
def test_a_buyer_is_mailed_over_verified_tls_after_a_login_and_the_password_is_never_logged(
        app, worker, relay, floor_ticket, act, drain, caplog) -> None:
    # Given a relay that takes mail only over TLS and after a login, and a buyer with an address
    caplog.set_level("DEBUG")
    ticket_id = floor_ticket(contact=CONTACT)
    # When evidence is requested from the buyer
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    # Then the relay received the mail over TLS, from our login, to the buyer
    assert relay.sessions == [{"tls": True, "login": USER, "to": [CONTACT["email"]]}]
    assert relay.logins == [(USER, PASSWORD)]
    [mailed] = notifications(ticket_id, "evidence_requested")
    assert (mailed.status, mailed.attempts, mailed.last_error) == (SENT, 1, None)
    # And the password appears in no log line of ours (the relay's own debug log is not ours), no
    # notification, no event
    logged = "\n".join(record.getMessage() for record in caplog.records if not record.name.startswith("mail.log"))
    written = logged + json.dumps([row.body for row in OutboxEvent.select()], ensure_ascii=False) + \
        json.dumps([(n.body, n.last_error) for n in Notification.select()], ensure_ascii=False)
    assert PASSWORD not in written and base64.b64encode(PASSWORD.encode()).decode() not in written


@pytest.mark.filterwarnings(IMPLICIT_AUTH_WARNING)
@pytest.mark.parametrize("relay", ["starttls", "implicit"], indirect=True)
def test_a_relay_whose_certificate_no_trusted_authority_signed_gets_nothing(relay, certificate, monkeypatch) -> None:
    # Given a policy that trusts the system's authorities only (no ca_file), and a self-signed relay
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    channel = SmtpChannel(SmtpPolicy("127.0.0.1", relay.port, "disputes@shop.example", Duration(5, "s"),
                                     relay.mode, USER, PASSWORD_ENV))
    # When a mail is delivered
    with pytest.raises(ChannelError) as refused:
        channel.deliver(delivery())
    # Then nothing reached the relay, not even the login, and the reason says why
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value) and f"{relay.mode} TLS" in str(refused.value)
    assert relay.messages == [] and relay.logins == []


def test_a_certificate_for_another_name_is_refused(relay, certificate, monkeypatch) -> None:
    # Given the relay reached by an address its certificate does not name
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    channel = SmtpChannel(SmtpPolicy("127.0.0.2", relay.port, "disputes@shop.example", Duration(5, "s"),
                                     "starttls", USER, PASSWORD_ENV, str(certificate[0])))
    # Then the mail is refused at the handshake (the relay listens on 127.0.0.1 only: the connection
    # itself may be refused first; either way nothing is sent)
    with pytest.raises(ChannelError):
        channel.deliver(delivery())
    assert relay.messages == [] and relay.logins == []


def test_a_relay_that_does_not_offer_starttls_is_not_sent_to_in_clear(certificate, monkeypatch) -> None:
    # Given a relay that offers no STARTTLS, and a policy that asks for it
    relay, controller = start_relay("starttls", certificate, tls_offered=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    try:
        channel = SmtpChannel(SmtpPolicy("127.0.0.1", relay.port, "disputes@shop.example", Duration(5, "s"),
                                         "starttls", USER, PASSWORD_ENV, str(certificate[0])))
        with pytest.raises(ChannelError, match="does not offer STARTTLS"):
            channel.deliver(delivery())
    finally:
        controller.stop()
    # Then neither the login nor the mail crossed the network
    assert relay.messages == [] and relay.logins == []


def test_a_refused_login_names_the_user_and_never_the_password(relay, certificate, caplog) -> None:
    # Given a relay that quotes the password it refuses (careless, but the error must not carry it)
    relay.echo_password_on_refusal = True
    wrong = "Wrong-" + PASSWORD
    channel = SmtpChannel(SmtpPolicy("127.0.0.1", relay.port, "disputes@shop.example", Duration(5, "s"),
                                     "starttls", USER, PASSWORD_ENV, str(certificate[0])),
                          environ={PASSWORD_ENV: wrong})
    caplog.set_level("DEBUG")
    # When a mail is delivered
    with pytest.raises(ChannelError) as refused:
        channel.deliver(delivery())
    # Then the reason says the login was refused, for whom; the password is cut out of it
    reason = str(refused.value)
    assert f"refused the login of '{USER}'" in reason and "<redacted>" in reason
    logged = "\n".join(record.getMessage() for record in caplog.records if not record.name.startswith("mail.log"))
    assert wrong not in reason and wrong not in logged and relay.messages == []
    assert relay.logins and set(relay.logins) == {(USER, wrong)}  # it did reach the relay (each mechanism tried)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_a_login_without_its_password_in_the_environment_stops_the_notify_worker_at_start(
        tmp_path, relay, certificate, monkeypatch) -> None:
    # Given a policy whose mail logs in, and an environment without the password's variable
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    data = fast_policy_dict(notifications={"channels": {"user": ["smtp"]}, "smtp": smtp_settings(relay, certificate)})
    app = build_app(Settings(database_url=f"sqlite:///{tmp_path}/n.db"), policy=policy_from_dict(data))
    # When the notify worker is declared (as `dramatiq workers.notify` and `disputes run` do)
    with pytest.raises(PolicyError) as stopped:
        workers.declare(app, "notify")
    # Then it says which variable is missing, for whose login
    assert stopped.value.problems == [(f"notifications.smtp.password_env: the environment variable {PASSWORD_ENV} "
                                       f"is not set (it holds the password of '{USER}')")]
    # And `disputes run` stops before starting anything, listing it
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(tomli_w.dumps(data))
    env = {"OP_DATABASE_URL": f"sqlite:///{tmp_path}/run.db", "OP_POLICY": str(policy_file), "OP_BROKER_URL": "",
           "OP_INTAKE_URL": ""}
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 1
    assert f"the environment variable {PASSWORD_ENV} is not set" in result.output


def test_an_unreadable_ca_file_stops_the_notify_worker_at_start(tmp_path, relay, certificate, monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    data = fast_policy_dict(notifications={"channels": {"user": ["smtp"]}, "smtp": smtp_settings(
        relay, certificate, ca_file=str(tmp_path / "missing.pem"))})
    app = build_app(Settings(database_url=f"sqlite:///{tmp_path}/n.db"), policy=policy_from_dict(data))
    with pytest.raises(PolicyError, match="notifications.smtp.ca_file: cannot use .*missing.pem"):
        workers.declare(app, "notify")


# -- merchants have an address where upstream gives one -------------------------------------------

def test_a_merchant_is_mailed_at_the_address_the_complaint_gave_and_the_event_masks_it(
        app, worker, relay, floor_ticket, act, drain) -> None:
    # Given a complaint whose order system knows the merchant's address
    ticket_id = floor_ticket(contact={**CONTACT, "merchant_email": "service@shop-7.example"})
    # When stage 3 judges it (both parties are told)
    act(1, ticket_id, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
    drain()
    act(3, ticket_id, "judge", {"liability": "customer", "remedy": "no_refund"})
    drain()
    # Then the merchant got the judgment by mail, at its own address, as the buyer did at theirs
    recipients = [session["to"] for session in relay.sessions]
    assert ["service@shop-7.example"] in recipients and [CONTACT["email"]] in recipients
    to_merchant = [n for n in notifications(ticket_id, "judgment") if n.recipient == "merchant"]
    assert [(n.channel, n.status) for n in to_merchant] == [("smtp", SENT)]
    # And the merchant's notify event shows the address masked, never whole
    [event] = [row.body for row in OutboxEvent.select().where((OutboxEvent.ticket_id == ticket_id)
                                                              & (OutboxEvent.routing_key == "notify.judgment"))
               if row.body["recipient"] == "merchant"]
    assert event["data"]["contact"] == {"email": "s***@shop-7.example"}
    everything = json.dumps([row.body for row in OutboxEvent.select()], ensure_ascii=False)
    assert "service@shop-7.example" not in everything


def test_a_merchant_without_an_address_is_skipped_by_mail(app, worker, relay, floor_ticket, act, drain) -> None:
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
    drain()
    act(3, ticket_id, "judge", {"liability": "customer", "remedy": "no_refund"})
    drain()
    [to_merchant] = [n for n in notifications(ticket_id, "judgment") if n.recipient == "merchant"]
    assert (to_merchant.status, to_merchant.last_error) == (SKIPPED, "no email address for the merchant")


# -- the policy says how ----------------------------------------------------------------------

def test_the_policy_names_the_password_variable_and_shows_no_secret(relay, certificate) -> None:
    data = default_policy_dict()
    data["notifications"] = {"smtp": smtp_settings(relay, certificate)}
    shown = dump_policy(policy_from_dict(data))
    assert f'password_env = "{PASSWORD_ENV}"' in shown and PASSWORD not in shown


def test_mail_to_a_relay_across_the_network_in_clear_is_warned_of_at_start(tmp_path, caplog) -> None:
    data = fast_policy_dict(notifications={"channels": {"user": ["smtp"], "merchant": ["log"]},
                                           "smtp": {"host": "mail.corp.example"}})
    app = build_app(Settings(database_url=f"sqlite:///{tmp_path}/n.db"), policy=policy_from_dict(data))
    with caplog.at_level("WARNING", logger="disputes.notify"):
        workers.declare(app, "notify")
    assert "notifications to user go to the mail relay mail.corp.example in clear" in caplog.text
