"""The approver console in a real headless browser (Debian's chromium, driven by Playwright).

A real Decide through the real gRPC server against real OPA opens an escalation; an approver logs
in to the console (the local-only dev login), sees the action, approves it with a comment, and the
agent's retry with the approval tokens is ALLOW. The browser is the system's chromium: never a
downloaded one.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import BrowserContext, ConsoleMessage, Locator, Page, Playwright, sync_playwright

from pdp.sidecar import OpaSidecar
from pdp.state import Escalation
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, Pdp, load_request
from tests.integration.test_mtls import _issue, _pem_key

pytestmark = pytest.mark.e2e

APPROVER = "dan.meyer@bank.example"  # payments_approver
OTHER_ROLE = "duty.manager@corp.example"  # active, but not a payments_approver
BENEFICIARY = "NL91ABNA0417164300"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no {CHROMIUM}: install Debian's chromium (the tests never download a browser)")
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[Callable[[], BrowserContext]]:
    """Opens browsers with fresh profiles (a user-data-dir each); closes them after the test."""
    opened: list[BrowserContext] = []

    def open_browser() -> BrowserContext:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / f"profile-{len(opened)}"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        opened.append(context)
        return context

    yield open_browser
    for context in opened:
        context.close()


class Console:
    """The console of one PDP, and the browser console errors of its pages."""

    def __init__(self, pdp: Pdp) -> None:
        assert pdp.server.console is not None
        self.url = f"http://127.0.0.1:{pdp.server.console.port}"
        self.code = pdp.server.console.dev_code
        self.errors: list[str] = []

    def page(self, context: BrowserContext) -> Page:
        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", self._note)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        return page

    def _note(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def log_in(self, page: Page, identity: str) -> None:
        page.goto(f"{self.url}/")
        assert page.url == f"{self.url}/login"
        page.get_by_label("Approver identity").fill(identity)
        page.get_by_label("Login code").fill(self.code)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{self.url}/")
        assert identity in page.locator(".identity").inner_text()


@pytest.fixture
def pdp(opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> Pdp:
    """A PDP with its console on a free loopback port and the local-only dev login."""
    return start_pdp(opa.url, console_listen="127.0.0.1:0", console_dev_login=True)


def escalate(pdp: Pdp, stub: pb_grpc.DecisionServiceStub | None = None) -> tuple[pb.DecideRequest, pb.DecideResponse]:
    """A real Decide that needs approval: a transfer to a new beneficiary."""
    req = load_request("fintech-require-approval-new-beneficiary.json")
    resp = (stub or pdp.stub).Decide(req, timeout=10)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert resp.escalation_id
    return req, resp


def escalated_and_logged_in(
    pdp: Pdp, context: BrowserContext
) -> tuple[pb.DecideRequest, pb.DecideResponse, Console, Page, Locator]:
    """An escalation opened by Decide, and the approver logged in to the console showing it."""
    req, resp = escalate(pdp)
    console = Console(pdp)
    page = console.page(context)
    console.log_in(page, APPROVER)
    return req, resp, console, page, page.locator("article.escalation", has_text=resp.escalation_id)


def escalation(pdp: Pdp, escalation_id: str) -> Escalation:
    found = pdp.server.store.get_escalation(escalation_id)
    assert found is not None
    return found


def test_an_approver_approves_in_the_browser_and_the_retry_is_allowed(
    pdp: Pdp, browser: Callable[[], BrowserContext]
) -> None:
    req, resp, console, page, card = escalated_and_logged_in(pdp, browser())
    text = card.inner_text()
    for shown in ("payments.transfer", BENEFICIARY, "25000", "ACC-1001", "confidential"):
        assert shown in text  # the action: tool, arguments, resource, classification
    for shown in ("payments-agent", "bob@bank.example", "fintech.new_beneficiary", "core-banking"):
        assert shown in text  # agent, principal, reasons, lineage
    assert "risk" in text

    card.get_by_label("Comment").fill("called the treasurer back: expected")
    card.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{console.url}/")
    assert f"Approved escalation {resp.escalation_id}" in page.locator(".flash").inner_text()
    assert page.locator("article.escalation").count() == 0  # nothing left to decide
    assert console.url + "/" == page.url  # nothing of the action in the URL

    decided = escalation(pdp, resp.escalation_id)
    assert decided.status == "approved"
    assert [(v.approver, v.comment) for v in decided.votes] == [(APPROVER, "called the treasurer back: expected")]

    retry = pb.DecideRequest()
    retry.CopyFrom(req)
    retry.request_id = f"{req.request_id}-retry"
    retry.approval_tokens.extend(approval_tokens(pdp, resp.escalation_id))
    assert pdp.stub.Decide(retry, timeout=10).outcome == pb.OUTCOME_ALLOW
    assert console.errors == []


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    pdp: Pdp, browser: Callable[[], BrowserContext]
) -> None:
    _, resp, console, page, card = escalated_and_logged_in(pdp, browser())

    card.locator("input[name=csrf]").evaluate("input => input.remove()")
    response = None
    with page.expect_navigation() as navigation:
        card.get_by_role("button", name="Approve").click()
    response = navigation.value
    assert response is not None and response.status == 403
    assert "CSRF" in page.locator("main").inner_text()
    assert escalation(pdp, resp.escalation_id).status == "open"
    assert escalation(pdp, resp.escalation_id).votes == []

    page.goto(f"{console.url}/")  # a forged token is no better
    card = page.locator("article.escalation", has_text=resp.escalation_id)
    card.locator("input[name=csrf]").evaluate("input => { input.value = 'forged' }")
    with page.expect_navigation() as navigation:
        card.get_by_role("button", name="Reject").click()
    assert navigation.value is not None and navigation.value.status == 403
    assert escalation(pdp, resp.escalation_id).status == "open"

    # The 403 documents are the only messages in the browser's console.
    assert console.errors and all("403" in e for e in console.errors), console.errors


def test_an_unauthenticated_visitor_sees_no_escalation(pdp: Pdp, browser: Callable[[], BrowserContext]) -> None:
    _, resp = escalate(pdp)
    console = Console(pdp)
    page = console.page(browser())
    page.goto(f"{console.url}/")
    assert page.url == f"{console.url}/login"
    text = page.locator("body").inner_text()
    assert resp.escalation_id not in text and "payments.transfer" not in text and BENEFICIARY not in text

    # Without a session (and with a wrong login code) nothing is decided either.
    answer = requests.post(
        f"{console.url}/decide", data={"escalation": resp.escalation_id, "verdict": "approve"}, timeout=10
    )
    assert answer.status_code == 403
    page.get_by_label("Approver identity").fill(APPROVER)
    page.get_by_label("Login code").fill("00000000" if console.code != "00000000" else "11111111")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Log in").click()
    assert navigation.value is not None and navigation.value.status == 403
    page.goto(f"{console.url}/")
    assert page.url == f"{console.url}/login"
    assert escalation(pdp, resp.escalation_id).status == "open"
    assert console.errors and all("403" in e for e in console.errors), console.errors


def test_an_approver_without_the_role_sees_nothing_to_approve(pdp: Pdp, browser: Callable[[], BrowserContext]) -> None:
    _, resp = escalate(pdp)
    console = Console(pdp)
    for identity, says in ((OTHER_ROLE, "No escalation is waiting"), ("nobody@bank.example", "not an active approver")):
        page = console.page(browser())
        console.log_in(page, identity)
        text = page.locator("main").inner_text()
        assert says in text
        assert resp.escalation_id not in text and "payments.transfer" not in text
        assert page.get_by_role("button", name="Approve").count() == 0
    assert escalation(pdp, resp.escalation_id).status == "open"
    assert console.errors == []


def test_the_console_answers_only_its_loopback_name_with_strict_headers(pdp: Pdp) -> None:
    console = Console(pdp)
    page = requests.get(f"{console.url}/login", timeout=10)
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    cookie = page.headers["Set-Cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # A rebinding name pointing at 127.0.0.1 is not this console.
    rebound = requests.get(f"{console.url}/", headers={"Host": "attacker.example"}, timeout=10)
    assert rebound.status_code == 421
    # GET never changes anything; actions are POST only.
    assert requests.get(f"{console.url}/decide", timeout=10).status_code == 405


def approval_tokens(pdp: Pdp, escalation_id: str) -> list[str]:
    """The approval tokens the desk issued for the escalation (what GetApprovalTokens answers)."""
    assert pdp.server.desk is not None
    tokens = pdp.server.desk.tokens(escalation_id, now=int(time.time()))
    assert tokens
    return tokens


def test_under_mtls_the_approver_is_the_client_certificate(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], tmp_path: Path
) -> None:
    ca = _issue("test-ca", [], None)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    files = {"ca": ca, "server": _issue("pdp", names, ca), "pep": _issue("pep-gateway", [], ca)}
    files |= {"approver": _issue(APPROVER, [], ca), "other": _issue(OTHER_ROLE, [], ca)}
    for name, (cert, key) in files.items():
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.key").write_bytes(_pem_key(key))
    pdp = start_pdp(
        start_opa().url,
        tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.pem",
        console_listen="127.0.0.1:0",
    )
    creds = grpc.ssl_channel_credentials(
        (tmp_path / "ca.pem").read_bytes(), (tmp_path / "pep.key").read_bytes(), (tmp_path / "pep.pem").read_bytes()
    )
    with grpc.secure_channel(f"localhost:{pdp.port}", creds) as channel:
        _, resp = escalate(pdp, pb_grpc.DecisionServiceStub(channel))
    assert pdp.server.console is not None and pdp.server.console.dev_code == ""  # no dev login under mTLS
    url = f"https://localhost:{pdp.server.console.port}"

    def session(who: str | None) -> requests.Session:
        s = requests.Session()
        s.verify = str(tmp_path / "ca.pem")
        s.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify
        if who:
            s.cert = (str(tmp_path / f"{who}.pem"), str(tmp_path / f"{who}.key"))
        return s

    anonymous = session(None).get(f"{url}/", timeout=10)
    assert anonymous.status_code == 401 and resp.escalation_id not in anonymous.text
    assert session(None).get(f"{url}/login", timeout=10).status_code == 404  # no dev login under mTLS
    other = session("other").get(f"{url}/", timeout=10)
    assert other.status_code == 200 and resp.escalation_id not in other.text

    approver = session("approver")
    page = approver.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and resp.escalation_id in page.text and BENEFICIARY in page.text
    assert "secure" in page.headers["Set-Cookie"].lower()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    form = {"csrf": csrf[1], "escalation": resp.escalation_id, "verdict": "approve", "comment": "ok"}
    # The session is the approver's certificate's: another certificate cannot use it.
    stolen = session("other")
    stolen.cookies = approver.cookies
    assert stolen.post(f"{url}/decide", data=form, timeout=10).status_code == 403
    assert escalation(pdp, resp.escalation_id).status == "open"
    done = approver.post(f"{url}/decide", data=form, timeout=10)
    assert done.status_code == 200 and f"Approved escalation {resp.escalation_id}" in done.text
    assert [v.approver for v in escalation(pdp, resp.escalation_id).votes] == [APPROVER]


def test_without_the_registry_the_console_shows_and_decides_nothing(pdp: Pdp, opa: OpaSidecar) -> None:
    _, resp = escalate(pdp)
    console = Console(pdp)
    s = requests.Session()
    login = s.get(f"{console.url}/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    form = {"csrf": csrf[1], "identity": APPROVER, "code": console.code}
    assert resp.escalation_id in s.post(f"{console.url}/login", data=form, timeout=10).text
    opa.stop()  # the approver registry is in OPA's data: no roles can be looked up
    page = s.get(f"{console.url}/", timeout=10)
    assert page.status_code == 503 and resp.escalation_id not in page.text
    assert escalation(pdp, resp.escalation_id).status == "open"
