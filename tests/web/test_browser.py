"""The desk end to end in headless Chromium: four agents take one dispute from takeover to closed.

The real server runs in this process as ``disputes run`` runs it — waitress
(`desk.server.serve`) on a free loopback port, dramatiq Worker threads on the
in-process broker, a scheduler thread — over a SQLite file. Upstream
messages go through the real intake (`workers.intake.Intake.admit`); the
agents only click in the browser (Debian's ``chromium`` driven by
Playwright); after each click the test checks the page and, through the
JSON API, the ticket's state and history. Screenshots of the ticket page and
the dashboard are written to ``$OP_DESK_SCREENSHOTS`` (``docs/`` to refresh
the README's) or to the test's temporary folder.

Skipped when ``/usr/bin/chromium`` or Playwright is missing, unless
``OP_REQUIRE_SERVERS=1`` (CI), where that is a failure.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import dramatiq
import pytest

import models
import workers
from desk.server import serve
from policy import default_policy_dict, policy_from_dict
from disputes.settings import Settings
from disputes.wiring import App, build_app
from scheduler.loop import Scheduler
from tests.conftest import complaint_body, fund_merchant
from tests.desk.conftest import Caller, add_agent
from workers.intake import Intake

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
#: Chromium's flags: headless, no sandbox (containers), and nothing that reaches outside the machine.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: How long a decision may take to be applied by the stage worker.
APPLY_TIMEOUT = 15.0

_messages = itertools.count(1)


def _need_browser() -> Any:
    """Playwright's sync API, or skip (fail under OP_REQUIRE_SERVERS=1) when the browser is missing."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)"
    else:
        try:
            from playwright import sync_api
            return sync_api
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[test]')"
    if os.environ.get("OP_REQUIRE_SERVERS") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


@dataclass
class LiveDesk:
    app: App
    url: str
    intake: Intake

    def admit(self, routing_key: str, body: dict) -> int | None:
        admission = self.intake.admit(routing_key, json.dumps(body).encode(), f"browser-test-{next(_messages)}")
        assert admission.status == "admitted", admission
        return admission.ticket_id

    def api(self, caller: Caller, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {caller.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for_state(self, caller: Caller, ticket_id: int, state: str) -> dict:
        """The ticket once the API shows it in `state` (the stage worker applies decisions)."""
        deadline = time.monotonic() + APPLY_TIMEOUT
        while True:
            ticket = self.api(caller, f"/tickets/{ticket_id}")
            if ticket["state"] == state or time.monotonic() > deadline:
                assert ticket["state"] == state, f"ticket {ticket_id} is {ticket['state']}, not {state}"
                return ticket  # type: ignore[no-any-return]
            time.sleep(0.05)


@pytest.fixture
def live_desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveDesk]:
    """The embedded system serving HTTP on a free loopback port."""
    import waitress

    app = build_app(Settings(database_url=f"sqlite:///{tmp_path}/desk.db"),
                    policy=policy_from_dict(default_policy_dict()))
    models.init_schema()
    workers.declare_all(app)
    worker = dramatiq.Worker(app.broker, worker_threads=4, worker_timeout=50)
    worker.start()
    stop = threading.Event()
    scheduler = threading.Thread(target=Scheduler(app, interval=0.1).run, args=(stop.is_set,), daemon=True)
    scheduler.start()

    servers: list[Any] = []
    create_server = waitress.create_server
    monkeypatch.setattr(waitress, "create_server",  # keep a handle on the server, to stop it
                        lambda *args, **kwargs: servers.append(create_server(*args, **kwargs)) or servers[-1])
    server_thread = threading.Thread(target=serve, args=(app, "127.0.0.1", 0), kwargs={"threads": 4}, daemon=True)
    server_thread.start()
    deadline = time.monotonic() + 10
    while not servers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert servers, "the server did not start"
    server = servers[0]
    try:
        yield LiveDesk(app, f"http://127.0.0.1:{server.effective_port}", Intake(app))
    finally:
        from waitress import wasyncore
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))  # closed by its own loop
        server_thread.join(timeout=5)
        server.task_dispatcher.shutdown()
        stop.set()
        scheduler.join(timeout=5)
        worker.stop()
        app.broker.close()
        if not app.db.is_closed():
            app.db.close()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of headless Chromium with a fresh profile (--user-data-dir)."""
    sync_api = _need_browser()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900}, locale="en-US", timezone_id="Asia/Shanghai")
        context.set_default_timeout(10_000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def screenshot_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("OP_DESK_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def claim_next_for(desk: LiveDesk, caller: Caller) -> Any:
    """``POST /me/claim`` as `caller` (the API, not the page)."""
    request = urllib.request.Request(desk.url + "/me/claim", method="POST",
                                     headers={"Authorization": f"Bearer {caller.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()) if response.status == 200 else None


def sign_in(page: Any, desk: LiveDesk, caller: Caller) -> None:
    page.goto(desk.url + "/desk/")
    assert "/desk/login" in page.url  # not signed in: the desk asks for the token
    page.fill("#token", caller.token)
    page.click("#sign-in")
    page.wait_for_url(desk.url + "/desk/")
    assert page.inner_text("#who").startswith(caller.agent.name)


def sign_out(page: Any) -> None:
    page.click("text=Sign out")
    page.wait_for_selector("#login-form")


def claim_next(page: Any, ticket_id: int) -> None:
    page.click("#claim-next")
    page.wait_for_selector("#ticket-title")
    assert page.inner_text("#ticket-title").startswith(f"#{ticket_id}")
    assert page.inner_text("#note") == "Ticket claimed"


def decide(page: Any, desk: LiveDesk, caller: Caller, ticket_id: int, action: str, state: str) -> dict:
    """Click an option button; wait until the worker applied it; reload and check the page agrees."""
    page.click(f"#do-{action}")
    page.wait_for_selector("#note")
    assert page.inner_text("#note").startswith("Decision accepted")
    ticket = desk.wait_for_state(caller, ticket_id, state)
    page.goto(f"{desk.url}/desk/tickets/{ticket_id}")
    assert page.get_attribute("#ticket-state", "data-state") == state
    events = desk.api(caller, f"/tickets/{ticket_id}/events")
    assert events[-1]["action"] == action and events[-1]["actor"] == caller.agent.actor
    rows = page.query_selector_all("#history tr.event")
    assert [r.get_attribute("data-action") for r in rows] == [e["action"] for e in events]
    return ticket


def test_four_agents_take_a_dispute_from_takeover_to_closed_in_the_browser(
        browser_page: Any, live_desk: LiveDesk, tmp_path: Path) -> None:
    desk, page = live_desk, browser_page
    # Given one agent per stage (stage 4 also supervises), a funded merchant and a complaint the
    # parties could not settle, with two more complaints waiting behind it
    s1, s2, s3 = (add_agent(f"agent{n}", n) for n in (1, 2, 3))
    s4 = add_agent("agent4", 4, supervisor=True)
    fund_merchant("m1")
    ticket_id = desk.admit("complaint.submitted", complaint_body(
        negotiation="failed", claimed_amount=5000, order={"amount": 12999},
        description="The jacket's zip broke on the first day; the merchant refuses a refund."))
    assert ticket_id is not None
    for _ in range(2):
        desk.admit("complaint.submitted", complaint_body(negotiation="failed", dispute_type="not_as_described"))
    assert desk.api(s1, f"/tickets/{ticket_id}")["state"] == "awaiting_takeover"

    # Stage 1: sign in, claim (the takeover), ask both parties for evidence
    sign_in(page, desk, s1)
    assert page.is_visible("#queue-empty")
    claim_next(page, ticket_id)
    ticket = desk.api(s1, f"/tickets/{ticket_id}")
    assert (ticket["state"], ticket["assignee"]) == ("stage1", s1.agent.id)
    assert page.get_attribute("#ticket-state", "data-state") == "stage1"
    assert page.inner_text("#claimed-amount") == "50.00 CNY"
    assert page.inner_text("#order-amount") == "129.99 CNY"
    assert page.is_enabled("#do-request_evidence") and page.is_enabled("#do-to_judgment")
    page.click("#do-request_evidence")  # nothing chosen yet: the 422 names the fields next to them
    page.wait_for_selector("#action-error")
    assert page.get_attribute("#action-error", "data-status") == "422"
    assert "dispute_status is required" in page.inner_text(
        "fieldset[data-action=request_evidence] .param[data-param=dispute_status]")
    page.click("#lang-toggle")  # the same page in Chinese: the policy's labels
    assert page.inner_text("#do-request_evidence") == "请求补充凭证"
    page.click("#lang-toggle")
    assert page.inner_text("#do-request_evidence") == "Request evidence"
    page.check("input[name='p.request_evidence.dispute_status'][value=not_reconciled]")
    assert page.is_checked("input[name='p.request_evidence.category'][value=apparel]")  # the ticket's own
    page.check("input[name='p.request_evidence.from'][value=both]")
    page.check("input[name='p.request_evidence.items'][value=photo]")
    page.check("input[name='p.request_evidence.items'][value=chat_log]")
    decide(page, desk, s1, ticket_id, "request_evidence", "awaiting_evidence")
    assert page.is_visible("text=The ticket waits on someone outside the floor")
    assert len(page.query_selector_all("#evidence-requests tbody tr")) == 2
    sign_out(page)

    # The parties answer through the intake: the ticket wakes into stage 2
    photo_hash = "9f2c" * 16
    desk.admit("evidence.submitted", {"schema_version": 1, "ticket_id": ticket_id, "party": "user", "items": [
        {"kind": "photo", "uri": "https://files.example.com/u1/zip.jpg", "sha256": photo_hash,
         "note": "broken zip"}]})
    desk.admit("evidence.submitted", {"schema_version": 1, "ticket_id": ticket_id, "party": "merchant", "items": [
        {"kind": "chat_log", "uri": "oss://evidence/m1/chat-0412.txt", "sha256": "ab" * 32}]})
    desk.wait_for_state(s2, ticket_id, "stage2")

    # Stage 2: the evidence is on the page (only web links clickable); QC ok; to judgment
    sign_in(page, desk, s2)
    claim_next(page, ticket_id)
    link = page.query_selector("#evidence a[href='https://files.example.com/u1/zip.jpg']")
    assert link is not None
    assert page.query_selector("#evidence a[href^='oss:']") is None
    assert photo_hash in page.inner_text("#evidence")
    page.check("#qc-ok")
    decide(page, desk, s2, ticket_id, "to_judgment", "stage3")
    sign_out(page)

    # Stage 3: the merchant is liable, full refund (the funded merchant is deducted at once)
    sign_in(page, desk, s3)
    claim_next(page, ticket_id)
    page.check("#qc-ok")
    page.check("input[name='p.judge.liability'][value=merchant]")
    page.check("input[name='p.judge.remedy'][value=full_refund]")
    ticket = decide(page, desk, s3, ticket_id, "judge", "stage4")
    assert (ticket["liability"], ticket["remedy"], ticket["amounts"]["refunded"]) == ("merchant", "full_refund", 5000)
    sign_out(page)

    # Stage 4: verify the refund and close
    sign_in(page, desk, s4)
    claim_next(page, ticket_id)
    assert page.inner_text("#payment").count("50.00 CNY") >= 1
    assert page.is_enabled("#do-verify_refund") and not page.is_enabled("#do-complaint_fee")
    verdicts = page.query_selector_all("#history .qc-cell [data-verdict]")
    assert [v.get_attribute("data-verdict") for v in verdicts] == ["ok", "ok"]
    shots = screenshot_dir(tmp_path)
    page.screenshot(path=str(shots / "desk-ticket.png"), full_page=True)
    page.check("#qc-ok")
    ticket = decide(page, desk, s4, ticket_id, "verify_refund", "closed")
    assert ticket["closed_at"] is not None
    assert page.is_visible("text=The ticket waits on someone outside the floor")

    # The buyer answers the survey; the supervisor's dashboard shows the floor
    desk.admit("survey.answered", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u1", "score": 5})
    assert claim_next_for(desk, s1) is not None  # agent1 takes over one of the two waiting complaints
    page.goto(desk.url + "/dashboard/")
    assert page.get_attribute("#board", "data-refresh") == "10"
    waiting = page.query_selector("#backlog tr[data-state=awaiting_takeover] .backlog-free")
    assert waiting is not None and waiting.inner_text() == "1"
    assert page.query_selector("#agents tr[data-agent=agent1] .agent-load").inner_text() == "1"
    closer = page.query_selector("#agents tr[data-agent=agent4]")
    assert closer is not None and closer.query_selector(".agent-satisfaction").inner_text().startswith("5.00")
    flags = [r.inner_text() for r in page.query_selector_all("#agents .agent-flags")]
    assert flags == ["0", "0", "0", "0"]
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    assert (shots / "desk-ticket.png").stat().st_size > 10_000 and (shots / "dashboard.png").stat().st_size > 10_000
