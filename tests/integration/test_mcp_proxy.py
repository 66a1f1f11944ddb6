"""`pdp mcp-proxy` between the SDK's real MCP client and real third-party MCP servers.

The servers are the npm filesystem server (installed by `make mcp-servers` into .mcp-servers/) and
PyPI's mcp-server-git (a dev dependency); the PDP and OPA are real, with the project's bundle whose
mcp pack has its roots pointed at this test's temporary directories.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from pdp import devissuer, keys
from pdp.ledger.log import read_frames, segments
from pdp.sidecar import OpaSidecar, free_port
from tests.helpers import BUNDLE, EXAMPLES, ROOT, Pdp, dev_issuers, wait_for

pytestmark = pytest.mark.integration

FS_SERVER = ROOT / ".mcp-servers" / "node_modules" / ".bin" / "mcp-server-filesystem"
GIT_SERVER = Path(sys.executable).parent / "mcp-server-git"
HTTP_FILES = Path(__file__).parent / "mcp_http_files.py"  # the SDK's server, over HTTP or stdio
PDP_CMD = [sys.executable, "-m", "pdp"]
META = "io.github.pdp/decision"
STEWARD = "dana.steward@corp.example"  # a data_steward in the test bundle's approver registry
T = TypeVar("T")


@dataclasses.dataclass
class World:
    root: Path  # what the filesystem server itself may touch
    allowed: Path  # what the policy allows (inside root)
    repo: Path
    pdp: Pdp
    log_dir: Path
    jwks: Path

    def proxy(self, mapping: str, *server: str, extra: tuple[str, ...] = ()) -> StdioServerParameters:
        args = [
            *PDP_CMD[1:],
            "mcp-proxy",
            "--agent",
            "coding-agent",
            "--agent-version",
            "1.0.0",
            "--pdp",
            f"127.0.0.1:{self.pdp.port}",
            "--mapping",
            str(EXAMPLES / "mcp" / mapping),
            "--list-ttl",
            "0",
            *extra,
            "--",
            *server,
        ]
        return StdioServerParameters(command=PDP_CMD[0], args=args)

    def files(self, *extra: str) -> StdioServerParameters:
        return self.proxy("filesystem.json", str(FS_SERVER), str(self.root), extra=extra)

    def git(self, *extra: str) -> StdioServerParameters:
        return self.proxy("git.yaml", str(GIT_SERVER), "--repository", str(self.repo), extra=extra)


@pytest.fixture
def world(tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp]) -> World:
    return make_world(tmp_path, start_opa, start_pdp)


def make_world(
    tmp_path: Path,
    start_opa: Callable[..., OpaSidecar],
    start_pdp: Callable[..., Pdp],
    fs_obligations: list[dict[str, Any]] | None = None,
    fs_config: dict[str, Any] | None = None,
    **pdp_settings: Any,
) -> World:
    """Servers' directories, and a real PDP + OPA whose mcp pack points at them (with these
    obligations on every allowed filesystem call, and ``fs_config`` over the pack's filesystem
    settings), and whose approver registry has :data:`STEWARD`."""
    if not FS_SERVER.exists():
        pytest.fail(f"no {FS_SERVER}: run `make mcp-servers` (the tests use the real npm filesystem server)")
    root = tmp_path / "files"
    allowed = root / "allowed"
    allowed.mkdir(parents=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("first\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-q", "-m", "first")
    # The project's bundle, with the mcp pack's roots set to this test's directories.
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    pack = bundle / "pdp" / "packs" / "mcp" / "data.json"
    data = json.loads(pack.read_text())
    data["config"]["servers"]["filesystem"]["roots"] = [str(allowed)]
    data["config"]["servers"]["git"]["roots"] = [str(repo)]
    data["config"]["servers"]["filesystem"]["obligations"] = fs_obligations or []
    data["config"]["servers"]["filesystem"].update(fs_config or {})
    pack.write_text(json.dumps(data))
    registry = bundle / "pdp" / "approvals" / "data.json"
    approvers = json.loads(registry.read_text())
    approvers["approvers"][STEWARD] = {"active": True, "roles": ["data_steward"]}
    registry.write_text(json.dumps(approvers))
    opa = start_opa(bundle=bundle)
    pdp = start_pdp(opa.url, key_dir=tmp_path / "pdp-keys", log_dir=tmp_path / "pdp-log", **pdp_settings)
    return World(root, allowed, repo, pdp, tmp_path / "pdp-log", tmp_path / "pdp-keys" / "jwks.json")


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def session(params: StdioServerParameters, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Runs ``fn`` with an SDK client connected (through the proxy) to the server."""

    async def main() -> T:
        async with Client(params, read_timeout_seconds=30) as client:
            return await fn(client)

    return anyio.run(main)


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> MCPError:
    with pytest.raises(MCPError) as e:
        await client.call_tool(tool, arguments)
    return e.value


def log_claims(log_dir: Path) -> list[dict[str, Any]]:
    """The claims of every record in a decision log, in order."""
    out = []
    for seg in segments(log_dir):
        frames, _ = read_frames(seg.read_bytes())
        for f in frames:
            payload = f.payload.decode().split(".")[1]
            out.append(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    return out


def outcome_reports(log_dir: Path) -> dict[str, str]:
    """decision id → the status of its outcome report, for every outcome report in the log."""
    return {
        c["decision_id"]: c["outcome"]["status"]
        for c in log_claims(log_dir)
        if c.get("pdp", {}).get("type") == "outcome"
    }


def about(log_dir: Path, decision_id: str) -> list[str]:
    """The types (``pdp.type``) of the records about one decision, in log order."""
    return [c["pdp"]["type"] for c in log_claims(log_dir) if c.get("decision_id") == decision_id]


def audit_verify(w: World) -> str:
    done = subprocess.run(
        [*PDP_CMD, "audit", "verify", str(w.log_dir), "--jwks", str(w.jwks)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_allowed_read_returns_the_file_and_its_outcome_is_linked_in_the_log(world: World) -> None:
    (world.allowed / "notes.txt").write_text("the quarterly numbers")

    result = session(world.files(), lambda c: c.call_tool("read_text_file", {"path": str(world.allowed / "notes.txt")}))

    assert [c.text for c in result.content] == ["the quarterly numbers"]  # type: ignore[union-attr]
    decision = (result.meta or {})[META]
    assert decision["outcome"] == "allow"
    claims = log_claims(world.log_dir)
    outcome = claims[decision["outcome_log_index"]]
    assert outcome["decision_id"] == decision["decision_id"]
    assert outcome["outcome"]["status"] == "executed"
    assert outcome["outcome"]["result"]["digest"].startswith("sha256:")
    assert outcome["outcome"]["result"]["redacted"] == []
    assert claims[decision["log_index"]]["decision_id"] == decision["decision_id"]
    assert "OK:" in audit_verify(world)


def test_every_allowed_call_of_a_session_has_a_decision_and_an_outcome_report(world: World) -> None:
    (world.allowed / "a.txt").write_text("a")

    async def calls(c: Client) -> list[dict[str, Any]]:
        metas = []
        for tool, args in [
            ("read_text_file", {"path": str(world.allowed / "a.txt")}),
            ("list_directory", {"path": str(world.allowed)}),
            ("get_file_info", {"path": str(world.allowed / "a.txt")}),
        ]:
            metas.append((await c.call_tool(tool, args)).meta[META])  # type: ignore[index]
        return metas

    metas = session(world.files(), calls)

    reported = outcome_reports(world.log_dir)
    assert {m["decision_id"]: reported.get(m["decision_id"]) for m in metas} == {
        m["decision_id"]: "executed" for m in metas
    }
    assert "OK:" in audit_verify(world)


def test_obligations_are_carried_out_on_the_result_and_reported(
    tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp]
) -> None:
    w = make_world(
        tmp_path,
        start_opa,
        start_pdp,
        [
            {"type": "redact", "params": {"fields": ["ssn"]}},
            {"type": "audit.note", "params": {"note": "customer data"}},
        ],
    )
    (w.allowed / "ann.json").write_text(json.dumps({"name": "Ann", "ssn": "123-45-6789"}))

    result = session(w.files(), lambda c: c.call_tool("read_text_file", {"path": str(w.allowed / "ann.json")}))

    assert json.loads(result.content[0].text) == {"name": "Ann", "ssn": "[REDACTED]"}  # type: ignore[union-attr]
    report = log_claims(w.log_dir)[result.meta[META]["outcome_log_index"]]["outcome"]  # type: ignore[index]
    assert report["result"]["redacted"] == ["content[0].ssn"]
    assert report["result"]["notes"] == ["customer data"]
    # The trace's last layer: what the call touched and what reached the client.
    assert report["impact"]["operation"] == "read"
    assert report["impact"]["resource"] == {"type": "mcp.file", "id": str(w.allowed / "ann.json")}
    assert report["impact"]["redacted_fields"] == 1 and report["impact"]["truncated_bytes"] == 0
    assert report["impact"]["delivered_bytes"] > len(result.content[0].text)  # type: ignore[union-attr]


def test_an_obligation_the_proxy_cannot_carry_out_refuses_the_call(
    tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp]
) -> None:
    w = make_world(tmp_path, start_opa, start_pdp, [{"type": "watermark", "params": {"text": "x"}}])
    (w.allowed / "a.txt").write_text("a")

    err = session(w.files(), lambda c: refused(c, "read_text_file", {"path": str(w.allowed / "a.txt")}))

    assert err.code == -32001
    assert "'watermark'" in err.message and "cannot carry out" in err.message
    assert err.data["outcome"] == "allow"  # an ALLOW the proxy did not act on: reported blocked
    blocked = [c for c in log_claims(w.log_dir) if c.get("decision_id") == err.data["decision_id"]]
    assert [c["pdp"]["type"] for c in blocked] == ["decision", "outcome"]
    assert blocked[-1]["outcome"]["status"] == "blocked"


def test_write_outside_the_roots_is_refused_with_the_deny_code_and_the_file_is_untouched(world: World) -> None:
    target = world.root / "outside.txt"
    target.write_text("original")

    err = session(world.files(), lambda c: refused(c, "write_file", {"path": str(target), "content": "overwritten"}))

    assert err.code == -32001
    assert "outside the roots" in err.message
    assert err.data["outcome"] == "deny"
    assert [r["code"] for r in err.data["reasons"]] == ["mcp.path_outside_roots"]
    assert target.read_text() == "original"
    # The signed DENY is the whole trace: the proxy files no outcome report on it.
    assert about(world.log_dir, err.data["decision_id"]) == ["decision"]


def test_write_needing_approval_is_held_not_forwarded(world: World) -> None:
    target = world.allowed / "draft.txt"

    err = session(world.files(), lambda c: refused(c, "write_file", {"path": str(target), "content": "new"}))

    assert err.code == -32001
    assert "Needs approval (by data_steward)" in err.message
    assert "not forwarded" in err.message
    assert err.data["outcome"] == "require_approval"
    assert err.data["approval"]["required"][0]["role"] == "data_steward"
    assert err.data["approval"]["escalation_id"]  # the escalation the PDP opened for approvers
    assert not target.exists()
    # The signed REQUIRE_APPROVAL and its escalation are the trace: no outcome report on it.
    assert about(world.log_dir, err.data["decision_id"]) == ["decision", "escalation"]


def test_tools_list_hides_the_tools_the_agent_may_never_use(world: World) -> None:
    async def names(c: Client) -> set[str]:
        return {t.name for t in (await c.list_tools()).tools}

    direct = session(StdioServerParameters(command=str(FS_SERVER), args=[str(world.root)]), names)
    proxied = session(world.files(), names)

    assert "move_file" in direct
    assert "move_file" not in proxied  # not granted to coding-agent
    assert {"read_text_file", "write_file", "list_directory"} <= proxied


def test_a_pdp_killed_mid_session_refuses_the_next_call(world: World) -> None:
    (world.allowed / "a.txt").write_text("a")
    target = world.allowed / "b.txt"
    (world.allowed / "b.txt").write_text("before")

    async def calls(c: Client) -> tuple[MCPError, MCPError]:
        await c.call_tool("read_text_file", {"path": str(world.allowed / "a.txt")})
        world.pdp.server.stop(0)
        err = await refused(c, "edit_file", {"path": str(target), "edits": [{"oldText": "before", "newText": "x"}]})
        with pytest.raises(MCPError) as listing:
            await c.list_tools(cache_mode="bypass")
        return err, listing.value

    err, listing = session(world.files(), calls)

    assert err.code == -32603
    assert "could not be asked" in err.message
    assert target.read_text() == "before"
    assert listing.code == -32603  # no list at all rather than an unchecked one


def test_a_record_that_does_not_verify_is_refused(world: World, tmp_path: Path) -> None:
    (world.allowed / "a.txt").write_text("secret")
    keys.ensure(tmp_path / "other-keys")  # a key the PDP never signed with

    err = session(
        world.files("--jwks", str(tmp_path / "other-keys" / "jwks.json")),
        lambda c: refused(c, "read_text_file", {"path": str(world.allowed / "a.txt")}),
    )

    assert err.code == -32603
    assert "does not verify" in err.message


def test_git_reads_are_allowed_and_a_commit_is_held(world: World) -> None:
    (world.repo / "README").write_text("changed\n")
    _git(world.repo, "add", "README")

    async def calls(c: Client) -> tuple[str, MCPError]:
        status = await c.call_tool("git_status", {"repo_path": str(world.repo)})
        err = await refused(c, "git_commit", {"repo_path": str(world.repo), "message": "sneaky"})
        return status.content[0].text, err  # type: ignore[union-attr]

    status, err = session(world.git(), calls)

    assert "README" in status
    assert err.code == -32001
    assert err.data["outcome"] == "require_approval"
    assert "repo_maintainer" in err.message
    assert _git(world.repo, "log", "--oneline").count("\n") == 1  # no new commit


def test_the_proxy_forwards_the_principal_token_and_the_record_names_the_verified_principal(
    world: World, tmp_path: Path
) -> None:
    token = tmp_path / "principal.jwt"
    token.write_text(devissuer.mint(dev_issuers(), "principal", {"sub": "dev@example.org", "roles": []}) + "\n")
    status = ("git_status", {"repo_path": str(world.repo)})
    git, with_token = world.git(), world.git("--principal-token-file", str(token))

    signed = session(with_token, lambda c: c.call_tool(*status))
    unsigned = session(git, lambda c: c.call_tool(*status))

    claims = log_claims(world.log_dir)
    verified = claims[(signed.meta or {})[META]["log_index"]]["pdp"]
    assert verified["principal"] == "dev@example.org"
    assert verified["trust"]["principal"] == {"issuer": devissuer.ISSUERS["principal"], "id": "dev@example.org"}
    assert verified["trust"]["rejected"] == []
    without = claims[(unsigned.meta or {})[META]["log_index"]]["pdp"]
    assert without["principal"] == "" and without["trust"]["principal"] is None


def test_an_unreadable_principal_token_file_stops_the_proxy_with_a_message_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jwt"
    mapping = str(EXAMPLES / "mcp" / "git.yaml")
    done = subprocess.run(
        [
            *PDP_CMD,
            "mcp-proxy",
            "--agent",
            "a",
            "--mapping",
            mapping,
            "--principal-token-file",
            str(missing),
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
    )

    assert done.returncode == 2
    assert f"--principal-token-file: {missing} is not a readable file" in done.stderr


def test_a_mapping_file_with_a_bad_field_stops_the_proxy_with_a_message_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"server": "fs", "tools": [{"match": "read_*"}]}))

    done = subprocess.run(
        [*PDP_CMD, "mcp-proxy", "--agent", "a", "--mapping", str(bad), "--", "true"], capture_output=True, text=True
    )

    assert done.returncode == 2
    assert "tools[0].operation is required" in done.stderr


@pytest.fixture
def http_proxy(world: World, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The proxy in streamable-HTTP mode in front of a real MCP server over HTTP; yields its URL.
    Indirect parametrization (``request.param``) gives the proxy more options."""
    upstream_port, proxy_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HTTP_FILES), str(upstream_port), str(world.root)],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "upstream.log").open("wb"),
        ),
        subprocess.Popen(
            [
                PDP_CMD[0],
                *world.files(*getattr(request, "param", ())).args[:-3],  # the stdio proxy's, without `-- server root`
                "--listen",
                f"127.0.0.1:{proxy_port}",
                "--upstream",
                f"http://127.0.0.1:{upstream_port}/mcp",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "proxy.log").open("wb"),
        ),
    ]
    for port in (upstream_port, proxy_port):
        wait_for(lambda p=port: _listening(p), timeout_s=20, what=f"a listener on port {port}")
    yield f"http://127.0.0.1:{proxy_port}/mcp"
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def gated_in(w: World, proxy: StdioServerParameters | str, mode: str) -> str:
    """Through the proxy (the files server), with the SDK's client in ``mode``: ``tools/list`` is
    filtered, an allowed read goes through with its outcome report, a denied write and a write needing
    approval are refused with -32001, their files untouched. Returns the version the client spoke."""
    (w.allowed / "a.txt").write_text("through the proxy")
    outside = w.root / "outside.txt"
    outside.write_text("original")
    held = w.allowed / "new.txt"

    async def main() -> tuple[str, set[str], CallToolResult, MCPError, MCPError]:
        async with Client(proxy, read_timeout_seconds=30, mode=mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            read = await c.call_tool("read_text_file", {"path": str(w.allowed / "a.txt")})
            denied = await refused(c, "write_file", {"path": str(outside), "content": "overwritten"})
            needs = await refused(c, "write_file", {"path": str(held), "content": "x"})
            return c.protocol_version, names, read, denied, needs

    version, names, read, denied, needs = anyio.run(main)

    assert names == {"read_text_file", "write_file"}  # move_file hidden
    assert [c.text for c in read.content] == ["through the proxy"]  # type: ignore[union-attr]
    decision = (read.meta or {})[META]
    assert decision["outcome"] == "allow"
    assert outcome_reports(w.log_dir)[decision["decision_id"]] == "executed"
    assert denied.code == -32001
    assert denied.data["outcome"] == "deny"
    assert outside.read_text() == "original"
    assert needs.code == -32001
    assert needs.data["outcome"] == "require_approval"
    assert not held.exists()
    return version


@pytest.mark.parametrize(
    ("mode", "version"),
    [("legacy", LATEST_HANDSHAKE_VERSION), ("auto", LATEST_MODERN_VERSION)],
    ids=["handshake", "current"],
)
def test_streamable_http_mode_gates_calls_and_lists(world: World, http_proxy: str, mode: str, version: str) -> None:
    # "auto": the SDK's client probes with `server/discover` and, answered, speaks the current version.
    assert gated_in(world, http_proxy, mode) == version


def test_the_current_version_over_stdio_is_gated_the_same(world: World) -> None:
    # The npm server speaks only the handshake versions; the SDK's server speaks the current one too.
    proxy = world.proxy("filesystem.json", sys.executable, str(HTTP_FILES), "stdio", str(world.root))

    assert gated_in(world, proxy, "auto") == LATEST_MODERN_VERSION
