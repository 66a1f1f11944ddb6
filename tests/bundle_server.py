"""A real static bundle server for tests: Debian's nginx on a free port, serving a directory with ETags."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pdp.sidecar import free_port, stop_process

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class BundleServer:
    """nginx serving ``root`` on 127.0.0.1 with ETag and ``If-None-Match`` (nginx's defaults for
    static files); a bundle is published by an atomic rename.

    As root, nginx's workers run as ``nobody``, who cannot enter pytest's private temporary
    directories: the server's own directory (config, pid, logs, ``www/``) is a fresh one in the
    system's temporary directory, readable by all, removed by :meth:`stop`.
    """

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="pdp-bundle-server-"))
        self.home.chmod(0o755)
        self.root = self.home / "www"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Starts nginx in the foreground (its own process) and waits until it answers."""
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        conf = self.home / "nginx.conf"
        conf.write_text(f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {self.home}/nginx.pid;
error_log {self.home}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {self.home}/access.log;
    client_body_temp_path {self.home}/tmp;
    proxy_temp_path {self.home}/tmp;
    fastcgi_temp_path {self.home}/tmp;
    uwsgi_temp_path {self.home}/tmp;
    scgi_temp_path {self.home}/tmp;
    types {{ application/gzip gz; }}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        etag on;
    }}
}}
""")
        (self.home / "tmp").mkdir(exist_ok=True)
        self.root.chmod(0o755)
        self.process = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(self.home)],
            stdout=subprocess.DEVNULL,
            stderr=(self.home / "stderr.log").open("wb"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.home / 'stderr.log').read_text()}")
            if self.status("/") is not None:
                return
            time.sleep(0.02)
        raise RuntimeError("nginx did not answer in time")

    def status(self, path: str) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def publish(self, bundle: Path, name: str) -> None:
        """Serves ``bundle`` at ``/name``: copied beside it, then renamed over the old one."""
        tmp = self.root / f".{name}.tmp"
        shutil.copyfile(bundle, tmp)
        tmp.chmod(0o644)
        os.replace(tmp, self.root / name)

    def requests(self) -> list[str]:
        """The access log's lines (method, path, status)."""
        log = self.home / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.home, ignore_errors=True)
