"""Start and stop a local ``opa run --server``: the sidecar for ``pdp dev`` and the tests."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from pdp.errors import SidecarError
from pdp.opa import UnixHTTPConnection
from pdp.policy.bundles import SigningKey, verification_args

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Resolved once, here: the child between fork and exec must not load libraries (a
# multi-threaded parent's fork copies locks that nobody will ever release).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Linux: OPA gets SIGTERM when the thread that started it ends, even by SIGKILL of the
    process, so a killed ``pdp dev`` never leaves an OPA holding its port. (Start the sidecar
    from a thread that lives as long as it should: ``pdp dev`` and the tests use the main one.)"""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stops a child process if it runs: SIGTERM, then SIGKILL after 5 s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class OpaSidecar:
    """One OPA server process serving a bundle directory or a signed bundle file.

    Args:
        opa_bin: the ``opa`` binary (path or name on ``PATH``).
        bundle: the bundle directory (``rego/``) or tarball; None when the configuration
            file makes OPA poll a bundle server instead.
        addr: ``host:port`` or ``unix:///path`` to listen on.
        config_file: an OPA configuration file (e.g. distributed tracing, bundle polling), or None.
        log_file: where OPA's own log goes; None inherits this process's stderr.
        verification_key: OPA refuses a ``bundle`` this key did not sign (and an unsigned one).
        bundles_ready: :meth:`start` waits until the configured bundles are activated
            (``/health?bundles``), not only until OPA answers.
    """

    def __init__(
        self,
        *,
        opa_bin: str,
        bundle: Path | None,
        addr: str,
        config_file: Path | None = None,
        log_file: IO[bytes] | None = None,
        verification_key: SigningKey | None = None,
        bundles_ready: bool = False,
    ) -> None:
        self._health_path = "/health?bundles" if bundles_ready else "/health"
        resolved = shutil.which(opa_bin)
        if resolved is None:
            raise FileNotFoundError(f"no opa binary at {opa_bin!r} (run `make tools`, or set PDP_OPA_BIN)")
        self.opa_bin = resolved
        self.bundle = bundle
        self.addr = addr
        self.config_file = config_file
        self._log_file = log_file
        self.verification_key = verification_key
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The address in PDP_OPA_URL form."""
        return self.addr if self.addr.startswith("unix://") else f"http://{self.addr}"

    def start(self, *, ready_timeout_s: float = 30.0) -> None:
        """Starts OPA and waits until ``/health`` answers 200.

        Raises:
            SidecarError: OPA exited or did not become healthy in time.
        """
        cmd = [self.opa_bin, "run", "--server", "--addr", self.addr, "--log-level", "error", "--skip-version-check"]
        if self.config_file is not None:
            cmd += ["--config-file", str(self.config_file)]
        # Policy tests live beside the policy (rego/**/x_test.rego) but are not policy: they
        # are never loaded into a serving OPA.
        if self.verification_key is not None:
            cmd += verification_args(self.verification_key)
        if self.bundle is not None:
            cmd += ["--ignore", "*_test.rego", "--bundle", str(self.bundle)]
        deadline = time.monotonic() + ready_timeout_s
        for attempt in (1, 2):
            log.debug("starting %s", " ".join(cmd))
            self.process = subprocess.Popen(
                cmd,
                stdout=self._log_file,
                stderr=self._log_file,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509  (one prctl before exec)
            )
            status = self._wait_healthy(deadline, ready_timeout_s)
            if status is None:
                return
            # Killed by a signal while starting (seen twice on a heavily loaded machine: -6) is not
            # an answer about the bundle or the address: start it once more.
            if status >= 0 or attempt == 2:
                raise SidecarError(f"opa exited with status {status}")
            log.warning("opa was killed by signal %d while starting; starting it again", -status)

    def _wait_healthy(self, deadline: float, ready_timeout_s: float) -> int | None:
        """None once OPA answers ``/health``; its exit status if it exits first.

        Raises:
            SidecarError: still not healthy at ``deadline`` (OPA is stopped).
        """
        assert self.process is not None
        while time.monotonic() < deadline:
            if (status := self.process.poll()) is not None:
                return status
            if self.healthy():
                return None
            time.sleep(0.05)
        self.stop()
        raise SidecarError(f"opa did not become healthy on {self.addr} within {ready_timeout_s:.0f}s")

    def healthy(self) -> bool:
        """Whether OPA answers ``GET /health`` with 200 right now."""
        conn: http.client.HTTPConnection
        if self.addr.startswith("unix://"):
            conn = UnixHTTPConnection(self.addr.removeprefix("unix://"), 1.0)
        else:
            conn = http.client.HTTPConnection(self.addr, timeout=1.0)
        try:
            conn.request("GET", self._health_path)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """Stops OPA: SIGTERM, then SIGKILL after 5 s."""
        stop_process(self.process)

    def __enter__(self) -> OpaSidecar:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
