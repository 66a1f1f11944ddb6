"""The approver console: a small web page on its own port (``PDP_CONSOLE_LISTEN``) over the approvals desk.

An approver sees the pending escalations their roles may decide (:meth:`ApprovalDesk.pending`), each
with the action as recorded (tool, arguments, resource, classification), agent, principal, reasons,
risk and lineage, and approves or rejects it with a comment. The page is a thin face: every rule
(roles, no self-approval, distinct approvers, expiry) is the desk's.

Who the approver is comes from the transport, never from a form:

* **mTLS** (``PDP_TLS_CLIENT_CA_FILE``): the client certificate's identity
  (:func:`pdp.authz.identity_of`: its SPIFFE ID, else its subject common name), noted per
  connection by the HTTP runner (:mod:`pdp.http.face`) as for AuthZEN, is the approver identity,
  as in the gRPC ApprovalService. Without a certificate: 401, nothing shown.
* **Dev login** (``PDP_CONSOLE_DEV_LOGIN``, honoured only on a loopback address without TLS): the
  user types an identity from the registry and the login code the PDP logs at start (a fresh one
  per start, so that another local user or a web page cannot log in by guessing). Requests whose
  ``Host`` is not the loopback address itself are refused (DNS rebinding).

Browser safety: a random session id in an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` under
TLS); a per-session CSRF token in every form, checked with the session on every POST (403 and no
change otherwise), and cross-site ``Origin`` / ``Sec-Fetch-Site`` refused; state changes are POST
only and answer 303 to ``/`` (results travel in the session, never in a URL); escalation ids and
comments travel in POST bodies; nothing of an action is logged. No scripts, no external assets:
``Content-Security-Policy: default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';
frame-ancestors 'none'; base-uri 'none'``. The HTML is built here with :func:`html.escape` on every
value and the stylesheet is a constant, so there is no package data to ship.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hmac
import html
import json
import logging
import secrets
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pdp.approvals.desk import ApprovalDesk, Approver
from pdp.authz import identity_of
from pdp.config import Settings
from pdp.errors import PdpError
from pdp.http.app import HttpError, PeerNames
from pdp.http.face import HttpFace, bind
from pdp.state import Escalation

log = logging.getLogger(__name__)

COOKIE = "pdp_console"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 16 * 1024
MAX_COMMENT = 1024  # the desk's limit
MAX_LOGIN_FAILURES = 20
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# What an approver must see, in this order; other context keys follow.
SHOWN = (
    "tool",
    "operation",
    "arguments",
    "destination",
    "resource",
    "classification",
    "agent",
    "principal",
    "reasons",
    "risk",
    "lineage",
    "caller",
)
HIDDEN = ("principals",)  # the same as principal.all


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Session:
    identity: str  # "" until logged in (the login form's own CSRF token lives in such a session)
    csrf: str
    expires: float
    flash: str = ""


class ConsoleApp:
    """The console's routes over one :class:`ApprovalDesk`.

    Args:
        desk: the approvals desk (the one place escalations are handled).
        peers: the TLS layer's client certificate names per connection (mTLS).
        mtls: approvers are named by client certificates.
        dev_code: when not empty, the dev login is on and this is its code.
        hosts: when not empty, the only ``Host`` headers answered (the dev login's loopback address).
        secure: the console is served over TLS (cookies get ``Secure``).
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        *,
        desk: ApprovalDesk,
        peers: PeerNames,
        mtls: bool,
        dev_code: str = "",
        hosts: frozenset[str] = frozenset(),
        secure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._desk = desk
        self._peers = peers
        self._mtls = mtls
        self._dev_code = dev_code
        self._hosts = hosts
        self._secure = secure
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._login_failures = 0

    def asgi(self) -> ASGIApp:
        """The ASGI application."""
        return Starlette(
            routes=[
                Route("/", self._guard(self._index), methods=["GET"]),
                Route("/decide", self._guard(self._decide), methods=["POST"]),
                Route("/login", self._guard(self._login_form), methods=["GET"]),
                Route("/login", self._guard(self._login), methods=["POST"]),
                Route("/logout", self._guard(self._logout), methods=["POST"]),
                Route("/console.css", self._guard(self._css), methods=["GET"]),
                Route("/favicon.ico", self._guard(self._icon), methods=["GET"]),
            ]
        )

    # ---- routes ---------------------------------------------------------------------------

    async def _index(self, request: Request) -> Response:
        sid, session = self._current(request)
        identity = await self._identity(request, session)
        if not identity:
            if self._dev_code:
                return _redirect("/login")
            raise HttpError(401, "A client certificate is required to use the approver console.")
        if session is None or session.identity != identity:  # a certificate's first visit: a session for it
            sid, session = self._new_session(identity)
        approver = await run_in_threadpool(self._desk.approver, identity)
        now = int(self._clock())
        pending = await run_in_threadpool(self._desk.pending, approver, now=now)
        flash, session = session.flash, dataclasses.replace(session, flash="")
        self._sessions[sid] = session
        body = _page_header(approver, session.csrf, logout=bool(self._dev_code))
        if flash:
            body += f'<p class="flash" role="status">{_e(flash)}</p>'
        if not approver.active:
            body += '<p class="empty">You are not an active approver in the registry: nothing to decide.</p>'
        elif not pending:
            body += '<p class="empty">No escalation is waiting for your roles.</p>'
        body += "".join(_escalation(e, approver, session.csrf, now) for e in pending)
        return self._html(body, sid=sid)

    async def _decide(self, request: Request) -> Response:
        form = await _form(request)
        sid, session = self._checked(request, form)
        identity = await self._identity(request, session)
        if not identity or identity != session.identity:
            raise HttpError(403, "Your session does not belong to this certificate; reload the console.")
        escalation_id, verdict = form.get("escalation", ""), form.get("verdict", "")
        comment = form.get("comment", "").strip()[:MAX_COMMENT]
        if not escalation_id or verdict not in ("approve", "reject"):
            raise HttpError(400, "The form is incomplete: an escalation and Approve or Reject are needed.")
        approver = await run_in_threadpool(self._desk.approver, identity)
        now = int(self._clock())
        try:
            if verdict == "approve":
                await run_in_threadpool(
                    functools.partial(self._desk.approve, escalation_id, approver, comment=comment, now=now)
                )
                flash = f"Approved escalation {escalation_id}."
            else:
                await run_in_threadpool(
                    functools.partial(self._desk.reject, escalation_id, approver, comment=comment, now=now)
                )
                flash = f"Rejected escalation {escalation_id}."
            log.info("console: %s %sd escalation %s", identity, verdict, escalation_id)
        except PdpError as e:
            flash = f"Nothing was recorded: {e}"
            log.info("console: %s could not %s escalation %s: %s", identity, verdict, escalation_id, type(e).__name__)
        self._sessions[sid] = dataclasses.replace(session, flash=flash)
        return _redirect("/")

    async def _login_form(self, request: Request) -> Response:
        if not self._dev_code:
            raise HttpError(404, "There is no login here: the console takes approvers from client certificates.")
        sid, session = self._new_session("")
        body = (
            "<h1>Approver console — dev login</h1>"
            '<p class="warn">Local development only: pick an approver from the registry '
            "(<code>rego/pdp/approvals/data.json</code>) and enter the login code the PDP printed at start.</p>"
            '<form method="post" action="/login" class="login">'
            f'<input type="hidden" name="csrf" value="{_e(session.csrf)}">'
            '<label for="identity">Approver identity</label>'
            '<input id="identity" name="identity" required autocomplete="username">'
            '<label for="code">Login code</label>'
            '<input id="code" name="code" required autocomplete="one-time-code">'
            '<button type="submit">Log in</button></form>'
        )
        return self._html(body, sid=sid)

    async def _login(self, request: Request) -> Response:
        if not self._dev_code:
            raise HttpError(404, "There is no login here: the console takes approvers from client certificates.")
        form = await _form(request)
        sid, _ = self._checked(request, form, logged_in=False)
        identity = form.get("identity", "").strip()
        if self._login_failures >= MAX_LOGIN_FAILURES:
            raise HttpError(403, "Too many wrong login codes: restart the PDP for a new one.")
        if not identity or not hmac.compare_digest(form.get("code", "").strip(), self._dev_code):
            self._login_failures += 1
            raise HttpError(403, "Wrong login code: it is in the PDP's log from its start.")
        del self._sessions[sid]  # a new session id at login: a planted one is worth nothing
        new_sid, _ = self._new_session(identity)
        log.info("console: dev login as %s", identity)
        return _redirect("/", sid=new_sid, secure=self._secure)

    async def _logout(self, request: Request) -> Response:
        form = await _form(request)
        sid, _ = self._checked(request, form)
        del self._sessions[sid]
        return _redirect("/login" if self._dev_code else "/", sid="", secure=self._secure)

    async def _css(self, request: Request) -> Response:
        return Response(_CSS, media_type="text/css", headers=_headers())

    async def _icon(self, request: Request) -> Response:
        return Response(_ICON, media_type="image/svg+xml", headers=_headers())

    # ---- the one place refusals become pages ----------------------------------------------

    def _guard(self, route: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                if self._hosts and request.headers.get("host", "") not in self._hosts:
                    raise HttpError(421, "This console answers only on its loopback address.")
                return await route(request)
            except HttpError as e:
                return self._html(f'<h1>{e.status}</h1><p class="error">{_e(e.message)}</p>', status=e.status)
            except PdpError as e:  # the registry (OPA) or the state store cannot answer: nothing shown, nothing done
                log.warning("console: %s %s: %s", request.method, request.url.path, type(e).__name__)
                return self._html(f'<h1>503</h1><p class="error">Unavailable now: {_e(e)}</p>', status=503)
            except Exception:
                log.exception("console: %s %s failed unexpectedly", request.method, request.url.path)
                return self._html('<h1>500</h1><p class="error">Internal error; nothing was recorded.</p>', status=500)

        return guarded

    # ---- pieces ---------------------------------------------------------------------------

    def _html(self, body: str, *, status: int = 200, sid: str | None = None) -> Response:
        doc = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<title>PDP approver console</title><link rel="stylesheet" href="/console.css">'
            '<link rel="icon" href="/favicon.ico" type="image/svg+xml">'
            f"</head><body><main>{body}</main></body></html>"
        )
        response = Response(doc, status_code=status, media_type="text/html", headers=_headers())
        if sid:
            _set_cookie(response, sid, secure=self._secure)
        return response

    def _current(self, request: Request) -> tuple[str, _Session | None]:
        sid = request.cookies.get(COOKIE, "")
        session = self._sessions.get(sid)
        if session is not None and session.expires <= self._clock():
            del self._sessions[sid]
            session = None
        return sid, session

    def _new_session(self, identity: str) -> tuple[str, _Session]:
        now = self._clock()
        if len(self._sessions) >= MAX_SESSIONS:
            for sid in [s for s, v in self._sessions.items() if v.expires <= now] or list(self._sessions)[:100]:
                del self._sessions[sid]
        sid = secrets.token_urlsafe(32)
        session = _Session(identity=identity, csrf=secrets.token_urlsafe(32), expires=now + SESSION_TTL_S)
        self._sessions[sid] = session
        return sid, session

    def _checked(self, request: Request, form: Mapping[str, str], *, logged_in: bool = True) -> tuple[str, _Session]:
        """The session of a POST, refused (403, nothing changed) unless it is same-site, has a live
        session (logged in, unless ``logged_in`` is False) and carries that session's CSRF token."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            raise HttpError(403, "Cross-site request refused.")
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise HttpError(403, "Cross-site request refused.")
        sid, session = self._current(request)
        if session is None or (logged_in and not session.identity):
            raise HttpError(403, "No session: reload the console (and log in) first.")
        if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
            raise HttpError(403, "The form's CSRF token is missing or wrong; nothing was recorded. Reload the console.")
        return sid, session

    async def _identity(self, request: Request, session: _Session | None) -> str:
        """The approver: from the client certificate under mTLS, else from the dev login's session."""
        if not self._mtls:
            return session.identity if session is not None else ""
        client = request.scope.get("client") or ("", 0)
        subject, sans, uris = self._peers.get((client[0], client[1]), ("", (), ()))
        return identity_of({"authenticated": bool(subject or sans), "subject": subject, "uri_sans": uris})


def create_console(settings: Settings, *, desk: ApprovalDesk) -> ConsoleFace:
    """Builds the console for ``desk`` and binds ``PDP_CONSOLE_LISTEN``, on the HTTP face's runner.

    Raises:
        PdpError: the address cannot be bound.
    """
    sock = bind(settings.console_listen, "PDP_CONSOLE_LISTEN")
    port = sock.getsockname()[1]
    dev = settings.console_dev_login_honoured and settings.tls_client_ca_file is None
    if settings.console_dev_login and not dev:
        log.warning("PDP_CONSOLE_DEV_LOGIN is ignored: the console is not on loopback without TLS")
    dev_code = f"{secrets.randbelow(10**8):08d}" if dev else ""
    host = settings.console_listen.rpartition(":")[0]
    hosts = frozenset({f"{host}:{port}", f"localhost:{port}"}) if dev else frozenset()
    peers: dict[tuple[str, int], tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    app = ConsoleApp(
        desk=desk,
        peers=peers,
        mtls=settings.tls_client_ca_file is not None,
        dev_code=dev_code,
        hosts=hosts,
        secure=settings.tls_cert_file is not None,
    )
    if dev:
        log.info(
            "approver console: http://%s:%d/ — dev login (local only): an approver from the registry, code %s",
            host,
            port,
            dev_code,
        )
    return ConsoleFace(app=app.asgi(), sock=sock, settings=settings, peers=peers, dev_code=dev_code)


class ConsoleFace(HttpFace):
    """The HTTP face's runner serving the console; ``dev_code`` is the dev login's code ("" when off)."""

    def __init__(
        self, *, app: ASGIApp, sock: socket.socket, settings: Settings, peers: dict[Any, Any], dev_code: str
    ) -> None:
        super().__init__(app=app, sock=sock, settings=settings, peers=peers, label="approver console")
        self.dev_code = dev_code


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (first value of each field), at most 16 KiB."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise HttpError(415, "Forms only.")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise HttpError(413, "The form is too large.")
    fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=16)
    return {k: v[0] for k, v in fields.items()}


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send `Origin: null` on form posts
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _set_cookie(response: Response, sid: str, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        sid,
        max_age=SESSION_TTL_S if sid else 0,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def _redirect(location: str, *, sid: str | None = None, secure: bool = False) -> Response:
    response = Response(status_code=303, headers={**_headers(), "Location": location})
    if sid is not None:
        _set_cookie(response, sid, secure=secure)
    return response


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _page_header(approver: Approver, csrf: str, *, logout: bool) -> str:
    roles = ", ".join(approver.roles) or "none"
    out = (
        '<header class="top"><h1>Pending approvals</h1>'
        f'<p class="who">Signed in as <strong class="identity">{_e(approver.identity)}</strong> · roles: {_e(roles)}'
    )
    out += "</p>"
    if logout:
        out += (
            '<form method="post" action="/logout" class="logout">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}"><button type="submit">Log out</button></form>'
        )
    return out + "</header>"


def _escalation(e: Escalation, approver: Approver, csrf: str, now: int) -> str:
    """One escalation: what it asks, who asks, why, and the approve/reject form (unless already voted)."""
    context: dict[str, Any] = dict(e.context)
    context.setdefault("agent", e.agent_id)
    context.setdefault("principal", e.principal_id)
    context.setdefault("reasons", e.reasons)
    keys = [k for k in SHOWN if k in context] + sorted(k for k in context if k not in SHOWN + HIDDEN)
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_value(context[k])}</dd>" for k in keys)
    votes = [v for v in e.votes if v.approve]
    voted = any(v.approver == approver.identity for v in e.votes)
    minutes = max(0, (e.expires_at - now) // 60)
    out = (
        f'<article class="escalation" aria-label="escalation {_e(e.id)}">'
        f"<h2>{_e(context.get('tool', 'action'))}</h2>"
        f'<p class="meta">escalation <code>{_e(e.id)}</code> · decision <code>{_e(e.decision_id)}</code> · '
        f"needs {e.count} approver(s) with role <strong>{_e(e.role)}</strong>, {len(votes)} so far · "
        f"expires {_e(_when(e.expires_at))} (in {minutes} min)</p>"
        f"<dl>{rows}</dl>"
    )
    if voted:
        return out + '<p class="voted">You have voted on this escalation; it waits for other approvers.</p></article>'
    return out + (
        '<form method="post" action="/decide" class="decide">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        f'<input type="hidden" name="escalation" value="{_e(e.id)}">'
        f'<label for="comment-{_e(e.id)}">Comment</label>'
        f'<textarea id="comment-{_e(e.id)}" name="comment" rows="2" maxlength="{MAX_COMMENT}"></textarea>'
        '<button type="submit" name="verdict" value="approve" class="approve">Approve</button>'
        '<button type="submit" name="verdict" value="reject" class="reject">Reject</button>'
        "</form></article>"
    )


def _value(value: Any) -> str:
    """A context value as HTML: reasons as code — message, mappings and lists as nested lists,
    scalars as escaped text (strings) or JSON (numbers, booleans, null)."""
    if isinstance(value, dict) and set(value) == {"code", "message"}:
        return f"<code>{_e(value['code'])}</code> — {_e(value['message'])}"
    if isinstance(value, dict):
        items = "".join(f"<li><span class='k'>{_e(k)}</span>: {_value(v)}</li>" for k, v in value.items())
        html_ = f"<ul class='map'>{items}</ul>"
    elif isinstance(value, list):
        html_ = "<ul>" + "".join(f"<li>{_value(v)}</li>" for v in value) + "</ul>"
    elif isinstance(value, str):
        html_ = f"<span class='s'>{_e(value)}</span>"
    else:  # Struct numbers are floats: 25000.0 is shown as 25000
        number = int(value) if isinstance(value, float) and value.is_integer() else value
        return f"<code>{_e(json.dumps(number))}</code>"
    return html_ if value else "<em>none</em>"


_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f4e79"/><path d="M4 8l3 3 5-6" stroke="#fff" fill="none"/></svg>'
)

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1b1f23; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
h2 { font-size: 1.15rem; margin: 0 0 .3rem; font-family: ui-monospace, monospace; }
.top { border-bottom: 1px solid #d0d7de; margin-bottom: 1rem; }
.who { color: #57606a; }
.top { display: grid; grid-template-columns: 1fr auto; align-items: center; }
.top h1 { grid-column: 1 / -1; }
.logout { justify-self: end; }
.flash { background: #ddf4ff; border: 1px solid #54aeff; padding: .5rem .8rem; border-radius: 6px; }
.error, .warn { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .8rem; border-radius: 6px; }
.empty { color: #57606a; font-style: italic; }
.escalation { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 1rem 1.2rem;
  margin-bottom: 1rem; }
.meta { color: #57606a; font-size: .9rem; }
dl { display: grid; grid-template-columns: 9rem 1fr; gap: .25rem 1rem; margin: .8rem 0; }
dt { font-weight: 600; color: #424a53; }
dd { margin: 0; }
dd ul { margin: 0; padding-left: 1.1rem; }
dd ul.map { list-style: none; padding-left: 0; }
dd ul.map ul.map { padding-left: 1rem; }
.k { color: #57606a; }
code { font-family: ui-monospace, monospace; font-size: .9em; }
.decide { display: grid; grid-template-columns: 1fr auto auto; gap: .5rem; align-items: end; }
.decide label { grid-column: 1 / -1; font-weight: 600; }
textarea, input { font: inherit; padding: .35rem; border: 1px solid #d0d7de; border-radius: 6px; }
.login { display: grid; gap: .4rem; max-width: 24rem; }
button { font: inherit; padding: .4rem 1rem; border-radius: 6px; border: 1px solid #d0d7de; cursor: pointer; }
.approve { background: #1f883d; color: #fff; border-color: #1a7f37; }
.reject { background: #cf222e; color: #fff; border-color: #a40e26; }
.voted { color: #1a7f37; font-weight: 600; }
"""
