"""Who is told what: the decision table of `models.notification.plan`, and the templates file's check."""
from __future__ import annotations

import pytest

from policy.notifications import AUDIENCE, OUTCOMES, TemplateError, load_templates, packaged_templates
from policy import LANGUAGES
from models.change import Actor, Role
from models.notification import Planned, masked_contact, plan
from models.outbox import OutboxEvent
from models.workflow import apply

BOTH = ("user", "merchant")
STATUS = {"dispute_status": "not_reconciled", "category": "apparel"}


@pytest.mark.parametrize("action, from_state, to_state, data, expected", [
    # negotiation outcomes
    ("direct_refund", "negotiating", "awaiting_confirmation", {"paid": 5000},
     [Planned("settlement", ("user",), "direct_refund"), Planned("refund", ("user",))]),
    ("negotiated_reject", "negotiating", "awaiting_confirmation", {},
     [Planned("settlement", ("user",), "negotiated_reject")]),
    ("intercept_48h", "negotiating", "intercepting", {}, [Planned("settlement", ("user",), "intercept_48h")]),
    ("merchant_response_deadline", "negotiating", "awaiting_takeover", {},
     [Planned("settlement", BOTH, "escalated")]),
    ("decline_settlement", "awaiting_confirmation", "awaiting_takeover", {},
     [Planned("settlement", BOTH, "escalated")]),
    ("accept_settlement", "awaiting_confirmation", "resolved", {},
     [Planned("settlement", BOTH, "resolved"), Planned("survey", ("user",))]),
    # the floor
    ("submit", None, "awaiting_takeover", {}, []),
    ("take_over", "awaiting_takeover", "stage1", {}, []),
    ("request_evidence", "stage1", "awaiting_evidence", {"parties": ["merchant"]},
     [Planned("evidence_requested", ("merchant",))]),
    ("request_evidence", "stage2", "awaiting_evidence", {"parties": ["user", "merchant"]},
     [Planned("evidence_requested", BOTH)]),
    ("submit_evidence", "awaiting_evidence", "stage2", {"items": 1}, []),
    ("judge", "stage3", "stage4", {"paid": 5000}, [Planned("judgment", BOTH), Planned("refund", ("user",))]),
    ("judge", "stage3", "awaiting_payment", {"awaiting": "voucher"},
     [Planned("judgment", BOTH), Planned("payment_awaited", ("merchant",))]),
    ("judge", "stage3", "awaiting_payment", {}, [Planned("judgment", BOTH), Planned("goods_return", ("user",))]),
    ("reject_voucher", "stage4", "awaiting_payment", {"awaiting": "voucher"},
     [Planned("payment_awaited", ("merchant",))]),
    ("payment_voucher_deadline", "awaiting_payment", "stage4", {"paid": 5000, "merchant_debt": 5000},
     [Planned("refund", ("user",))]),
    ("verify_refund", "stage4", "closed", {}, [Planned("closed", BOTH), Planned("survey", ("user",))]),
    ("complaint_fee", "stage4", "closed", {"complaint_fee": 500, "paid": 500},
     [Planned("complaint_fee", ("user",)), Planned("closed", BOTH), Planned("survey", ("user",))]),
    ("complaint_fee", "stage4", "closed", {"complaint_fee": 0},
     [Planned("closed", BOTH), Planned("survey", ("user",))]),
    ("complaint_fee", "stage4", "stage4", {"pending_approval": "complaint_fee", "amount": 5000}, []),
    ("withdraw", "stage2", "withdrawn", {}, []),
])
def test_each_change_tells_the_parties_what_concerns_them(action, from_state, to_state, data, expected) -> None:
    assert plan(action, from_state, to_state, data) == expected


def test_every_template_is_written_for_each_recipient_in_both_languages() -> None:
    templates = packaged_templates()
    assert set(templates.texts) == {(name, recipient, language) for name, recipients in AUDIENCE.items()
                                    for recipient in recipients for language in LANGUAGES}
    assert set(templates.outcomes) == {(outcome, language) for outcome in OUTCOMES for language in LANGUAGES}


def test_a_broken_templates_file_lists_every_problem() -> None:
    text = '''
[templates.judgment.user.zh]
subject = "line one\\nline two {ref}"
body = "{amount!r} and {nope}"
[templates.typo.user.zh]
subject = "x"
body = "y"
[outcomes.resolved]
zh = "{outcome}"
'''
    with pytest.raises(TemplateError) as raised:
        load_templates(text)
    problems = raised.value.problems
    for fragment in ("templates.typo: not a template", "templates.judgment.user.zh.subject: must be one line",
                     "templates.judgment.user.zh.body: braces must pair", "templates.judgment.user.en: missing",
                     "outcomes.resolved.zh: unknown placeholder outcome", "outcomes.escalated.en: missing"):
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


def test_rendering_fills_the_outcome_phrase_and_keeps_the_subject_on_one_line() -> None:
    rendered = packaged_templates().render("settlement", "user", "en", {
        "ref": "shop:A\nB", "order_id": "O-1", "outcome": "direct_refund", "amount": "50.00 CNY",
        "deadline": "2026-11-23 10:00 (Asia/Shanghai)"})
    assert rendered.subject == "Dispute shop:A B: negotiation update"
    assert "50.00 CNY is on its way back to you" in rendered.body and "by 2026-11-23 10:00" in rendered.body


@pytest.mark.parametrize("contact, masked", [
    ({"email": "buyer.wang@example.com", "phone": "13812345678"},
     {"email": "b***@example.com", "phone": "*******5678"}),
    ({"phone": "12345"}, {"phone": "***"}),
    ({"email": "not-an-address"}, {}),
    (None, {}),
])
def test_contact_data_is_masked(contact, masked) -> None:
    assert masked_contact(contact) == masked


# -- through the workflow ---------------------------------------------------------------------

def test_negotiation_outcomes_are_announced_as_settlements(app, publish, complaint) -> None:
    # Given a complaint in negotiation
    ticket_id = publish("complaint.submitted", complaint()).ticket_id
    # When the merchant rejects with the buyer's agreement, and the buyer declines
    apply(ticket_id, "negotiated_reject", Actor(Role.MERCHANT), {"option": "negotiated_reject"}, app.policy)
    apply(ticket_id, "decline_settlement", Actor(Role.USER), {}, app.policy)
    # Then the buyer was asked to confirm, and then both heard the platform takes over
    sent = [(e.body["template"], e.body["recipient"], e.body["data"]["facts"].get("outcome"))
            for e in OutboxEvent.select().where(OutboxEvent.routing_key.startswith("notify.")).order_by(OutboxEvent.id)]
    assert sent == [("settlement", "user", "negotiated_reject"), ("settlement", "user", "escalated"),
                    ("settlement", "merchant", "escalated")]


def test_the_survey_goes_out_once_per_ticket_even_after_an_appeal(app, publish, complaint) -> None:
    # Given a ticket closed after a customer-side judgment
    from tests.conftest import fund_merchant
    fund_merchant()
    ticket_id = publish("complaint.submitted", complaint(negotiation="failed")).ticket_id

    def close(judge: int) -> None:
        apply(ticket_id, "judge", Actor.agent(3, judge), {"liability": "customer", "remedy": "no_refund"},
              app.policy, qc={"verdict": "ok"})
        apply(ticket_id, "complaint_fee", Actor.agent(4, 41), {"amount": 0}, app.policy, qc={"verdict": "ok"})
    apply(ticket_id, "take_over", Actor.agent(1, 11), {}, app.policy)
    apply(ticket_id, "to_judgment", Actor.agent(1, 11), STATUS, app.policy)
    close(31)
    # When the buyer appeals and the ticket closes again
    apply(ticket_id, "appeal", Actor(Role.USER), {"party": "user", "reason_code": "disagree_liability"}, app.policy)
    close(32)
    # Then the closing was announced twice, the survey once
    keys = [e.routing_key for e in OutboxEvent.select().where(OutboxEvent.routing_key.startswith("notify."))]
    assert keys.count("notify.closed") == 4 and keys.count("notify.survey") == 1


def test_a_notification_that_cannot_be_written_never_holds_up_the_change(app, publish, complaint, monkeypatch,
                                                                          caplog) -> None:
    # Given templates that fail to render (a bug, a broken file)
    import models.notification

    def broken() -> None:
        raise RuntimeError("template file unreadable")
    monkeypatch.setattr(models.notification, "packaged_templates", broken)
    ticket_id = publish("complaint.submitted", complaint()).ticket_id
    # When the merchant answers with a settlement the buyer must hear of
    outcome = apply(ticket_id, "negotiated_reject", Actor(Role.MERCHANT), {"option": "negotiated_reject"},
                    app.policy)
    # Then the change is committed all the same, without the notification, and the failure is logged loudly
    assert outcome.ticket.state == "awaiting_confirmation"
    assert [e.routing_key for e in OutboxEvent.select().order_by(OutboxEvent.id)] == [
        "ticket.negotiating", "ticket.awaiting_confirmation"]
    assert any("could not be written" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
