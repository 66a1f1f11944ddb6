"""OPA REST client for the decision path.

One keep-alive HTTP/1.1 connection per worker thread (``http.client``: the cheapest client per
call measured here), to OPA on loopback TCP or a unix socket. Every query asks for provenance
and metrics; ``explain`` only when the caller asked for it. Every failure is one of the
:class:`~pdp.errors.NoVerdict` errors, so the pipeline can fail closed on all of them alike.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from pdp.config import Settings
from pdp.errors import OpaError, OpaTimeout, OpaUnavailable

if TYPE_CHECKING:
    from pdp.telemetry import Telemetry

_EXPLAIN = ("", "notes", "fails", "full")  # indexed by pdp.v1.ExplainLevel
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class OpaAnswer:
    """What OPA said about one query."""

    result: Any  # the decision document; ``OpaAnswer.UNDEFINED`` when OPA returned none
    opa_version: str
    bundle_revisions: dict[str, str]
    eval_ns: int
    explanation: list[dict[str, Any]]
    roundtrip_ns: int

    UNDEFINED = _MISSING

    @property
    def defined(self) -> bool:
        return self.result is not _MISSING


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (OPA's ``--addr unix:///path``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class OpaClient:
    """Queries one decision path (and its batch path) of one OPA server.

    Args:
        url: ``http://host:port`` or ``unix:///path``.
        decision_path: the rule path, e.g. ``pdp/decision``.
        telemetry: traces each query as an HTTP client span (None: untraced, e.g. health probes).
        batch_path: the rule that evaluates the decision for each of ``input.requests``.
        max_answer_bytes: the largest answer read (0: any); a larger one is an OpaError, unread.
    """

    def __init__(
        self,
        url: str,
        decision_path: str,
        telemetry: Telemetry | None = None,
        *,
        batch_path: str = Settings.batch_path,
        max_answer_bytes: int = 0,
    ) -> None:
        self._url = url
        self._max_answer = max_answer_bytes
        self._telemetry = telemetry
        self._path = f"/v1/data/{decision_path}?provenance=true&metrics=true"
        self._batch_path = f"/v1/data/{batch_path}?provenance=true&metrics=true"
        self._local = threading.local()

    def query(self, input_doc: dict[str, Any], *, timeout_s: float, explain: int = 0) -> OpaAnswer:
        """Evaluates the decision document for ``input_doc``.

        Raises:
            OpaTimeout: no answer within ``timeout_s``.
            OpaUnavailable: OPA could not be reached.
            OpaError: OPA answered with an error or an unexpected body.
        """
        path = self._path + (f"&explain={_EXPLAIN[explain]}" if explain else "")
        return self._query(path, {"input": input_doc}, timeout_s)

    def query_batch(self, input_docs: list[dict[str, Any]], *, timeout_s: float) -> list[OpaAnswer]:
        """Evaluates the decision for each of ``input_docs`` in one query: one answer each, in order.

        Raises:
            as :meth:`query`; OpaError also when the answer is not one decision per input.
        """
        answer = self._query(self._batch_path, {"input": {"requests": input_docs}}, timeout_s)
        if not answer.defined:
            return [answer] * len(input_docs)
        if not isinstance(answer.result, list) or len(answer.result) != len(input_docs):
            raise OpaError(f"OPA's batch answer is not one decision per request ({self._batch_path})")
        return [dataclasses.replace(answer, result=r) for r in answer.result]

    def _query(self, path: str, document: dict[str, Any], timeout_s: float) -> OpaAnswer:
        if timeout_s <= 0:
            raise OpaTimeout("no time left before the caller's deadline")
        body = json.dumps(document, separators=(",", ":")).encode()
        start = time.perf_counter_ns()
        if self._telemetry is None:
            status, raw = self._post(path, body, timeout_s, {})
        else:
            with self._telemetry.opa_call(url=self._url, path=path) as trace_headers:
                self._local.trace_headers = trace_headers
                status, raw = self._post(path, body, timeout_s, trace_headers)
        took = time.perf_counter_ns() - start
        if status != 200:
            raise OpaError(f"OPA answered HTTP {status}: {_error_message(raw)}")
        return _parse(raw, took)

    def trace_headers(self) -> dict[str, str]:
        """The trace headers (``traceparent``) of the last query this thread sent; empty when untraced."""
        headers: dict[str, str] = getattr(self._local, "trace_headers", {})
        return headers

    def outside_bundle(self, *, timeout_s: float) -> list[str]:
        """Policy modules and data OPA holds outside its bundles' roots (put there through its REST
        API: the bundle's own are under the roots it declares), one line each; [] when there are none.

        Raises:
            OpaUnavailable, OpaTimeout, OpaError: as :meth:`query`.
        """
        bundles = self._get("/v1/data/system/bundles", b"", timeout_s).get("result") or {}
        names = [str(n) for n in bundles] if isinstance(bundles, dict) else []
        roots = [
            str(r).strip("/").split("/")
            for b in (bundles.values() if isinstance(bundles, dict) else [])
            for r in ((b.get("manifest") or {}).get("roots") or [""])
        ]
        found = []
        for module in self._get("/v1/policies", b"", timeout_s).get("result") or []:
            path = [str(t.get("value")) for t in module.get("ast", {}).get("package", {}).get("path", [])[1:]]
            ident = str(module.get("id", ""))
            if not any(ident.startswith(f"{n}/") for n in names) or not any(path[: len(r)] == r for r in roots):
                found.append(f"policy module {ident!r} (package {'.'.join(path)})")
        query = json.dumps({"query": "keys := {k | some k; _ = data[k]}"}).encode()
        answer = self._get("/v1/query", query, timeout_s).get("result") or [{}]
        tops = {r[0] for r in roots if r and r[0]} | {"system"}
        found += [f"data at /{k}" for k in sorted(answer[0].get("keys", [])) if k not in tops]
        return found

    def _get(self, path: str, body: bytes, timeout_s: float) -> dict[str, Any]:
        """GET ``path`` (POST when ``body``) and its JSON object."""
        try:
            conn = self._connection(timeout_s)
            try:
                if body:
                    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                else:
                    conn.request("GET", path)
                resp = conn.getresponse()
                status, raw = resp.status, resp.read()
            except BaseException:
                self.close()
                raise
        except (http.client.HTTPException, OSError) as e:
            raise _classify(e, self._url) from None
        if status != 200:
            raise OpaError(f"OPA answered HTTP {status} to {path}: {_error_message(raw)}")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise OpaError(f"OPA's answer to {path} is not JSON") from None
        return doc if isinstance(doc, dict) else {}

    def close(self) -> None:
        """Closes this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _post(self, path: str, body: bytes, timeout_s: float, headers: dict[str, str]) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout_s
        reused = getattr(self._local, "conn", None) is not None
        try:
            return self._roundtrip(path, body, timeout_s, headers)
        except (ConnectionError, http.client.BadStatusLine) as e:
            # A keep-alive connection OPA closed while idle fails on first use; evaluation has
            # no side effects, so one retry on a fresh connection is safe.
            remaining = deadline - time.monotonic()
            if not reused or remaining <= 0:
                raise OpaUnavailable(f"OPA unreachable at {self._url}: {e}") from None
            try:
                return self._roundtrip(path, body, remaining, headers)
            except (ConnectionError, http.client.HTTPException, OSError) as e2:
                raise _classify(e2, self._url) from None
        except (http.client.HTTPException, OSError) as e:
            raise _classify(e, self._url) from None

    def _roundtrip(self, path: str, body: bytes, timeout_s: float, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection(timeout_s)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
            resp = conn.getresponse()
            raw = resp.read(self._max_answer + 1) if self._max_answer else resp.read()
        except BaseException:
            self.close()
            raise
        if self._max_answer and len(raw) > self._max_answer:
            self.close()  # the rest is never read: OPA sees the connection go
            raise OpaError(f"OPA's answer is larger than {self._max_answer} bytes")
        return resp.status, raw

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._url.startswith("unix://"):
                conn = UnixHTTPConnection(self._url.removeprefix("unix://"), timeout_s)
            else:
                conn = http.client.HTTPConnection(self._url.removeprefix("http://"), timeout=timeout_s)
            self._local.conn = conn
        conn.timeout = timeout_s
        if conn.sock is not None:
            conn.sock.settimeout(timeout_s)
        return conn


def _classify(e: BaseException, url: str) -> OpaTimeout | OpaUnavailable | OpaError:
    if isinstance(e, TimeoutError | socket.timeout):
        return OpaTimeout(f"OPA at {url} did not answer in time")
    if isinstance(e, OSError):
        return OpaUnavailable(f"OPA unreachable at {url}: {e}")
    return OpaError(f"OPA at {url} broke the HTTP exchange: {e!r}")


def _error_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        return f"{body.get('code', '?')}: {body.get('message', '')}"[:500]
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")


def _parse(raw: bytes, roundtrip_ns: int) -> OpaAnswer:
    try:
        body = json.loads(raw)
    except ValueError:
        raise OpaError("OPA's answer is not JSON") from None
    if not isinstance(body, dict):
        raise OpaError("OPA's answer is not a JSON object")
    prov = body.get("provenance")
    metrics = body.get("metrics")
    if not isinstance(prov, dict) or not isinstance(metrics, dict):
        raise OpaError("OPA's answer lacks provenance or metrics")
    bundles = prov.get("bundles") or {}
    revisions = (
        {str(name): str(b.get("revision", "")) for name, b in bundles.items() if isinstance(b, dict)}
        if isinstance(bundles, dict)
        else {}
    )
    explanation = body.get("explanation") or []
    return OpaAnswer(
        result=body.get("result", _MISSING),
        opa_version=str(prov.get("version", "")),
        bundle_revisions=revisions,
        eval_ns=int(metrics.get("timer_rego_query_eval_ns", 0) or 0),
        explanation=[e for e in explanation if isinstance(e, dict)] if isinstance(explanation, list) else [],
        roundtrip_ns=roundtrip_ns,
    )
