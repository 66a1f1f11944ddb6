"""Runs the HTTP face (uvicorn) inside the PDP process, beside the gRPC server.

uvicorn serves the ASGI application on its own event loop in one thread; the decision pipeline
runs in the application's worker threads. The listening socket is bound in :meth:`HttpFace.create`
(port 0 picks a free one), so the port is known before :meth:`HttpFace.start`.

TLS and mTLS reuse the gRPC settings (``PDP_TLS_CERT_FILE``, ``PDP_TLS_KEY_FILE``,
``PDP_TLS_CLIENT_CA_FILE``). uvicorn does not put the client certificate into the ASGI scope, so
the HTTP protocol is subclassed to note, per connection, the certificate's subject CN and
subject alternative names (what gRPC's auth context gives) under the client address the scope
carries; the application binds them into ``input.caller`` exactly as gRPC does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pdp.approvals.desk import ApprovalDesk
from pdp.authz import RoleMap
from pdp.config import Settings
from pdp.decide import Decider
from pdp.errors import PdpError
from pdp.http import authzen
from pdp.http.app import AuthzenApp
from pdp.recorder import Recorder
from pdp.telemetry import Telemetry

log = logging.getLogger(__name__)


class HttpFace:
    """The HTTP listener: created (socket bound), then started and stopped with the gRPC server."""

    def __init__(
        self,
        *,
        app: ASGIApp,
        sock: socket.socket,
        settings: Settings,
        peers: dict[Any, Any],
        label: str = "HTTP (AuthZEN)",
    ) -> None:
        self._sock = sock
        self.label = label
        self.port: int = sock.getsockname()[1]
        self.scheme = "https" if settings.tls_cert_file else "http"
        protocol = _protocol_noting_peers(peers)
        config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            log_level=logging.WARNING,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(settings.grace_s)),
            ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
            ssl_ca_certs=str(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
            # A missing certificate is answered 401 by the application (a presented one is still
            # verified against the CA here); gRPC refuses the handshake instead.
            ssl_cert_reqs=ssl.CERT_OPTIONAL if settings.tls_client_ca_file else ssl.CERT_NONE,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="pdp-http", daemon=True)
        self._failed: BaseException | None = None

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        decider: Decider,
        recorder: Recorder,
        telemetry: Telemetry,
        roles: RoleMap,
        desk: ApprovalDesk | None = None,
    ) -> HttpFace:
        """Builds the AuthZEN application for ``decider`` and binds ``PDP_HTTP_LISTEN``.

        Raises:
            PdpError: the address cannot be bound.
            ConfigError: the AuthZEN mapping file is wrong.
        """
        mapping = (
            authzen.Mapping.load(settings.authzen_mapping) if settings.authzen_mapping else authzen.Mapping.default()
        )
        peers: dict[tuple[str, int], tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
        app = AuthzenApp(
            decider=decider,
            recorder=recorder,
            telemetry=telemetry,
            mapping=mapping,
            max_request_bytes=settings.max_request_bytes,
            max_depth=settings.max_depth,
            peers=peers,
            require_client_cert=settings.tls_client_ca_file is not None,
            allowed_callers=frozenset(settings.http_callers),
            base_url=settings.http_base_url,
            roles=roles,
            desk=desk,
        )
        sock = bind(settings.http_listen, "PDP_HTTP_LISTEN")
        return cls(app=app.asgi(), sock=sock, settings=settings, peers=peers)

    def start(self, timeout_s: float = 10.0) -> None:
        """Starts serving; returns once uvicorn listens.

        Raises:
            PdpError: uvicorn did not start.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PdpError(f"the {self.label} face did not start: {self._failed or 'timed out'}")
            time.sleep(0.01)
        log.info("PDP %s on %s port %d", self.label, self.scheme, self.port)

    def stop(self, grace_s: float) -> None:
        """Stops taking requests, lets in-flight ones finish (up to ``grace_s``), then stops."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(grace_s + 2)
        self._sock.close()

    def _run(self) -> None:
        try:
            # uvicorn installs no signal handlers off the main thread; the PDP's own handler stops it.
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as e:  # reported by start(); the thread must not die silently
            self._failed = e
            log.error("the %s face stopped: %s", self.label, e)


def bind(listen: str, variable: str) -> socket.socket:
    """A TCP socket bound to ``listen`` (``host:port``; port 0 picks a free one).

    Raises:
        PdpError: the address cannot be bound; the message names ``variable``.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it each answer waits for the client's delayed ACK (~40 ms; measured).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise PdpError(f"{variable}: could not bind {listen}: {e}") from None
    return sock


def _protocol_noting_peers(peers: dict[Any, Any]) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP/1.1 protocol, noting each TLS connection's client certificate names in ``peers``.

    httptools (the C parser) rather than h11 (pure Python): measured, it is what lets the HTTP
    face keep up with gRPC (bench/authzen_bench.py).
    """

    class _Protocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            cert = ssl_object.getpeercert() if ssl_object is not None else None
            if cert and self.client:
                peers[self.client] = _names(cert)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client:
                peers.pop(self.client, None)
            super().connection_lost(exc)

    return _Protocol


def _names(cert: dict[str, Any]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(subject CN, SANs, URI SANs) of a verified peer certificate, as gRPC's auth context names them."""
    cn = next((value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"), "")
    sans = tuple(value for _, value in cert.get("subjectAltName", ()))
    uris = tuple(value for kind, value in cert.get("subjectAltName", ()) if kind == "URI")
    return cn, sans, uris
