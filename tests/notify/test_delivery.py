"""Notifications leave through real channels: email to a local SMTP server, a webhook that fails.

Send (a change that concerns a party), join (the notify queue), assert (what
the server received, what the Notification row and the outbox say).
"""
from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from policy import Policy
from disputes.cli.ticket_show import show_ticket, undelivered_notifications
from models.evidence import EvidenceRequest
from models.notification import FAILED, PENDING, SENT, SKIPPED, Notification, NotificationRef
from models.outbox import Dispatch, OutboxEvent
from models.ticket import Ticket
from tests.notify.conftest import CONTACT, REQUEST_MERCHANT, REQUEST_USER, wait_until
from models.sending import send_dispatches

PHOTO = {"kind": "photo", "uri": "https://files.example/p1.jpg"}


@pytest.fixture
def language() -> str:
    return "zh"


@pytest.fixture
def channels() -> dict:
    return {"user": ["smtp", "log"], "merchant": ["webhook"]}


@pytest.fixture
def policy(make_policy, smtp_server, webhook, language, channels) -> Policy:
    """The fast policy, mailing buyers through the local SMTP server, merchants per `channels`."""
    return make_policy(notifications={
        "language": language, "max_attempts": 3, "channels": channels,
        "smtp": {"host": "127.0.0.1", "port": smtp_server.port, "from": "disputes@shop.example", "timeout": "5s"},
        "webhook": {"url": webhook.url, "timeout": "2s"}})


def local_deadline(ticket_id: int) -> str:
    due = EvidenceRequest.get(EvidenceRequest.ticket == ticket_id).due_at.astimezone(ZoneInfo("Asia/Shanghai"))
    return f"{due:%Y-%m-%d %H:%M}"


def notifications(ticket_id: int, template: str | None = None) -> list[Notification]:
    query = Notification.select().where(Notification.ticket_id == ticket_id)
    if template is not None:
        query = query.where(Notification.template == template)
    return list(query.order_by(Notification.id))


# -- email ------------------------------------------------------------------------------------

@pytest.mark.parametrize("language, words", [
    ("zh", ("请在", "前补充凭证", "图片、聊天记录")),
    ("en", ("please send evidence by", "Photos, Chat log")),
])
def test_an_evidence_request_reaches_the_buyer_by_email_in_the_policy_language_with_its_deadline(
        app, worker, smtp_server, floor_ticket, act, drain, language, words) -> None:
    # Given a buyer who gave an email address, and a policy that mails buyers in `language`
    ticket_id = floor_ticket(contact=CONTACT)
    ticket = Ticket.get_by_id(ticket_id)
    # When the stage-1 agent asks the buyer for photos and the chat log
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    # Then one mail reached the SMTP server, to the buyer, from the configured sender
    assert smtp_server.envelopes == [("disputes@shop.example", [CONTACT["email"]])]
    mail = smtp_server.messages[0]
    subject, text = mail["Subject"], mail.get_body(("plain",)).get_content()
    assert mail.get_content_charset() == "utf-8"
    assert mail["Content-Language"] == ("zh-CN" if language == "zh" else "en")
    # And it names the ticket and the deadline, in the policy's language
    deadline = local_deadline(ticket_id)
    assert ticket.ref in subject and deadline in subject
    assert ticket.ref in text and f"{deadline} (Asia/Shanghai)" in text and ticket.order_id in text
    assert all(word in subject + text for word in words)
    # And the notification is recorded as sent, once
    [mailed] = notifications(ticket_id, "evidence_requested")[:1]
    assert (mailed.channel, mailed.status, mailed.attempts, mailed.language) == ("smtp", SENT, 1, language)
    assert mailed.sent_at is not None and mailed.last_error is None


def test_a_redelivered_message_sends_no_second_email(app, worker, smtp_server, floor_ticket, act, drain) -> None:
    # Given an evidence request mailed to the buyer (and logged)
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    sent = notifications(ticket_id, "evidence_requested")
    # When its message is delivered again (a broker redelivery, a reconciler re-drive)
    send_dispatches(app.broker, [NotificationRef([n.id for n in sent], ticket_id)])
    drain()
    # Then the notifications, already sent, are not sent again nor tried again
    assert len(smtp_server.messages) == 1
    assert [(n.status, n.attempts) for n in notifications(ticket_id, "evidence_requested")] == [(SENT, 1)] * 2
    # And no dispatch row stands for them: the notification is the work item
    assert not Dispatch.select().where(Dispatch.queue == "notify").exists()


def test_a_buyer_without_an_email_address_is_skipped_by_email_and_still_logged(
        app, worker, smtp_server, floor_ticket, act, drain) -> None:
    # Given a complaint that gave no contact
    ticket_id = floor_ticket()
    # When evidence is requested from the buyer
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    # Then no mail is attempted: the email notification is skipped with the reason, the log one sent
    assert smtp_server.messages == []
    by_channel = {n.channel: n for n in notifications(ticket_id, "evidence_requested")}
    assert (by_channel["smtp"].status, by_channel["smtp"].last_error) == (SKIPPED, "no email address for the user")
    assert by_channel["log"].status == SENT
    assert Ticket.get_by_id(ticket_id).state == "awaiting_evidence"


# -- the outbox -------------------------------------------------------------------------------

def test_notify_events_go_to_the_outbox_with_the_contact_masked(app, worker, floor_ticket, act, drain) -> None:
    # Given a buyer who gave an email address and a phone number
    ticket_id = floor_ticket(contact=CONTACT)
    # When evidence is requested from both parties
    act(1, ticket_id, "request_evidence", dict(REQUEST_USER, **{"from": "both"}))
    drain()
    # Then op.events gets one notify.evidence_requested per party, after the state change
    rows = list(OutboxEvent.select().where(OutboxEvent.ticket_id == ticket_id).order_by(OutboxEvent.id))
    keys = [row.routing_key for row in rows]
    assert keys[-3:] == ["ticket.awaiting_evidence", "notify.evidence_requested", "notify.evidence_requested"]
    to_user, to_merchant = (row.body for row in rows[-2:])
    assert (to_user["recipient"], to_user["recipient_id"]) == ("user", "u1")
    assert (to_merchant["recipient"], to_merchant["recipient_id"]) == ("merchant", "m1")
    assert to_user["template"] == "evidence_requested" and to_user["data"]["language"] == "zh"
    assert to_user["data"]["facts"]["items"] == ["photo", "chat_log"]
    assert to_user["data"]["facts"]["due_at"] and to_user["data"]["channels"] == ["smtp", "log"]
    # And the contact is masked: no event body anywhere holds the address or the phone number
    assert to_user["data"]["contact"] == {"email": "b***@example.com", "phone": "*******5678"}
    assert "contact" not in to_merchant["data"]
    everything = json.dumps([row.body for row in OutboxEvent.select()], ensure_ascii=False)
    assert CONTACT["email"] not in everything and CONTACT["phone"] not in everything


# -- webhook: retries, failure ----------------------------------------------------------------

def test_a_failing_webhook_is_retried_while_the_ticket_moves_on(
        app, worker, webhook, fast_retries, floor_ticket, act, publish, drain_stages, drain) -> None:
    # Given a merchant webhook that answers 500 twice before it recovers
    webhook.failures = 2
    ticket_id = floor_ticket()
    # When evidence is requested from the merchant
    act(1, ticket_id, "request_evidence", REQUEST_MERCHANT)
    drain_stages()
    wait_until(lambda: webhook.statuses[:1] == [500])
    # Then the ticket does not wait for the webhook: the merchant answers and it reaches stage 2
    publish("evidence.submitted", {"schema_version": 1, "ticket_id": ticket_id, "party": "merchant",
                                   "items": [PHOTO]})
    drain_stages()
    assert Ticket.get_by_id(ticket_id).state == "stage2"
    # And the notification is delivered on its third try, each try recorded
    drain()
    assert webhook.statuses == [500, 500, 200]
    [hooked] = notifications(ticket_id, "evidence_requested")
    assert (hooked.channel, hooked.status, hooked.attempts, hooked.last_error) == ("webhook", SENT, 3, None)
    # And what the webhook received is the notify event itself, three times the same
    event = OutboxEvent.get_by_id(hooked.outbox_id).body
    assert webhook.calls == [event] * 3
    assert event["template"] == "evidence_requested" and event["recipient"] == "merchant"


def test_a_webhook_that_never_recovers_leaves_a_failed_visible_notification(
        app, worker, webhook, fast_retries, floor_ticket, act, drain, capsys) -> None:
    # Given a merchant webhook that always answers 500, and max_attempts = 3
    webhook.failures = 10**6
    ticket_id = floor_ticket()
    # When evidence is requested from the merchant, and every try has run
    act(1, ticket_id, "request_evidence", REQUEST_MERCHANT)
    drain()  # fail_fast: the last try ends the message without dead-lettering it
    # Then the webhook was tried max_attempts times and the notification is failed, with the reason
    assert webhook.statuses == [500, 500, 500]
    [hooked] = notifications(ticket_id, "evidence_requested")
    assert (hooked.status, hooked.attempts) == (FAILED, 3)
    assert "500" in hooked.last_error and hooked.sent_at is None
    # And it is visible with the ticket (`disputes ticket show` lists failed notifications), which is unharmed
    ticket = Ticket.get_by_id(ticket_id)
    [failed] = undelivered_notifications(ticket)
    assert (failed["id"], failed["status"], failed["attempts"], failed["channel"]) == (hooked.id, FAILED, 3, "webhook")
    show_ticket(ticket, app, as_json=False)
    shown = " ".join(capsys.readouterr().out.split())  # as one line, however the console wrapped it
    assert f"notification {hooked.id} (evidence_requested to the merchant by webhook): failed after 3 tries" in shown
    assert "500" in shown
    assert ticket.state == "awaiting_evidence"
    assert not Notification.select().where(Notification.status == PENDING).exists()


# -- closing ----------------------------------------------------------------------------------

def test_closing_tells_both_parties_and_sends_the_buyer_a_survey(
        app, worker, smtp_server, webhook, floor_ticket, act, drain) -> None:
    # Given a ticket judged against a merchant whose funds cover the refund
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
    drain()
    act(3, ticket_id, "judge", {"liability": "merchant", "remedy": "full_refund"})
    drain()
    # When stage 4 verifies the refund and closes it
    act(4, ticket_id, "verify_refund")
    drain()
    assert Ticket.get_by_id(ticket_id).state == "closed"
    # Then the buyer was mailed the judgment, the refund, the closing and a survey, in that order
    ref = Ticket.get_by_id(ticket_id).ref
    assert [mail["Subject"] for mail in smtp_server.messages] == [
        f"纠纷单 {ref}：判责结果", f"纠纷单 {ref}：已退款 50.00 元", f"纠纷单 {ref} 已结案", f"纠纷单 {ref}：请为本次服务评分"]
    assert [n.template for n in notifications(ticket_id) if n.channel == "smtp"] == [
        "judgment", "refund", "closed", "survey"]
    # And the merchant heard of the judgment and the closing by webhook
    assert [call["template"] for call in webhook.calls] == ["judgment", "closed"]
    # And the survey carries its link and code, and went out as a notify.survey event to the buyer
    survey = OutboxEvent.get((OutboxEvent.ticket_id == ticket_id) & (OutboxEvent.routing_key == "notify.survey")).body
    code, url = survey["data"]["facts"]["survey_code"], survey["data"]["facts"]["survey_url"]
    assert url == f"https://survey.example.com/disputes/{code}" and code.startswith(f"{ticket_id}-")
    mail = smtp_server.messages[-1].get_body(("plain",)).get_content()
    assert url in mail and code in mail and "1–5" in mail
    assert {n.status for n in notifications(ticket_id)} == {SENT}
