"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary directory, ``pg_ctl start`` on a
free port (its unix socket in that directory too), removed at the end. Registered as a pytest plugin
in ``tests/conftest.py``.

Fixtures:
    postgres_server: one server per test session (:class:`PostgresServer`); ``stop()`` / ``start()`` it
        to test an outage (the ``postgres_url`` fixture restarts a stopped server).
    postgres_url: a fresh, empty database on that server for each test:
        ``postgresql://postgres@127.0.0.1:<port>/<db>``.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<v>/bin``, or
``PDP_TEST_PG_BIN``). ``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` system user (``runuser``) in a directory it owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.sidecar import free_port


def pg_bin() -> Path:
    """The directory of ``initdb``/``pg_ctl``; fails the test with what to install if there is none."""
    candidates = [Path(os.environ["PDP_TEST_PG_BIN"])] if os.environ.get("PDP_TEST_PG_BIN") else []
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or "
        "PDP_TEST_PG_BIN: install them (Debian: apt-get install postgresql); tests never mock the database"
    )


class PostgresServer:
    """A PostgreSQL cluster in its own temporary directory, trust auth, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pdp-pg-"))
        self._user = None
        if os.geteuid() == 0:  # initdb refuses root: the server runs as the package's system user
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root needs the `postgres` system user (Debian's postgresql package makes it)")
        if self._user is not None:
            os.chown(self.home, self._user.pw_uid, self._user.pw_gid)
        self.data = self.home / "data"
        self.log = self.home / "server.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.running = False

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self._user is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log[-2000:]}")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.home} -c fsync=off"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options)
        self.running = True

    def stop(self) -> None:
        """Stops the server now (``-m immediate``: like a crash or an outage)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session, removed at its end."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new empty database on the session's server (started again if a test stopped it)."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.create_database()
