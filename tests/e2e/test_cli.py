"""What a newcomer does: `pdp dev` (as `make run` runs it), `pdp decide`, grpcurl, Ctrl-C."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from pdp import devissuer, keys, records
from pdp.config import Settings
from pdp.ledger.log import Log
from pdp.sidecar import free_port
from pdp.v1 import decision_pb2 as pb
from tests.helpers import EXAMPLES, PDP_COMMAND, ROOT, claims_of, dev_env, serve_env, start_child, wait_for

pytestmark = pytest.mark.e2e

PDP = PDP_COMMAND
GRPCURL = ROOT / ".bin" / "grpcurl"
OUTCOMES = {
    "allow-crm-lookup.json": "OUTCOME_ALLOW",
    "deny-tool-not-granted.json": "OUTCOME_DENY",
    "require-approval-high-risk.json": "OUTCOME_REQUIRE_APPROVAL",
}


class DevStack:
    def __init__(self, process: subprocess.Popen[str], addr: str, opa_port: int, log: Path, issuers: Path) -> None:
        self.process, self.addr, self.opa_port, self.log, self.issuers = process, addr, opa_port, log, issuers


@pytest.fixture
def dev_stack(opa_bin: str, tmp_path: Path) -> Iterator[DevStack]:
    port, opa_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    env = dev_env(tmp_path, port=port, opa_bin=opa_bin)
    issuers = tmp_path / "issuers"
    process = start_child(
        "dev", "--bundle", "rego", "--opa-addr", f"127.0.0.1:{opa_port}", "--issuer-dir", str(issuers), env=env, log=log
    )
    stack = DevStack(process, f"127.0.0.1:{port}", opa_port, log, issuers)
    yield stack
    if process.poll() is None:
        process.kill()
        process.wait()


def decide(addr: str, *args: str) -> dict:
    out = subprocess.run([*PDP, "decide", "--addr", addr, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def documented_codes() -> dict[str, str]:
    """Reason code → what it does (deny, allow, approval ...) from rego/README.md's table."""
    readme = (ROOT / "rego" / "README.md").read_text()
    table = readme.split("\n## Reason codes", 1)[1].split("\n## ", 1)[0]  # the section's table only
    rows = re.findall(r"^\| `([a-z_.]+)` \| (\w+)", table, re.MULTILINE)
    return dict(rows)


def test_every_reason_code_in_the_policy_is_documented() -> None:
    in_policy = {
        m.group(1)
        for path in (ROOT / "rego").rglob("*.rego")
        if not path.name.endswith("_test.rego")
        for m in re.finditer(r"^#\s+code:\s+(\S+)$", path.read_text(), re.MULTILINE)
    }
    assert in_policy == set(documented_codes())  # rego/README.md's table: no more, no fewer


_KIND = {"OUTCOME_ALLOW": "allow", "OUTCOME_DENY": "deny", "OUTCOME_REQUIRE_APPROVAL": "approval"}


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_pdp_decide_on_each_example_gives_its_documented_outcome_and_codes(dev_stack: DevStack, example: str) -> None:
    # Each example is named for its outcome (README); its reason codes are in rego/README.md's table.
    expected = next(
        o
        for name, o in [
            ("require-approval", "OUTCOME_REQUIRE_APPROVAL"),
            ("allow", "OUTCOME_ALLOW"),
            ("deny", "OUTCOME_DENY"),
        ]
        if name in example
    )
    # As a PEP does: forward the principal token, risk assertion and lineage attestations
    # (here minted by the dev issuers `pdp dev` set up) for what the example asserts.
    resp = decide(dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), str(EXAMPLES / example))
    assert resp["outcome"] == expected
    assert resp["provenance"]["bundleRevisions"]
    documented = documented_codes()
    codes = [r["code"] for r in resp["reasons"]]
    assert codes and all(c in documented for c in codes), f"undocumented reason codes: {codes}"
    assert _KIND[expected] in {documented[c] for c in codes}


def test_explain_flag(dev_stack: DevStack, tmp_path: Path) -> None:
    # A new request id: a retry of an earlier request gets its logged record, without explanation.
    req = json.loads((EXAMPLES / "allow-crm-lookup.json").read_text())
    req["requestId"] = "explain-me"
    (tmp_path / "req.json").write_text(json.dumps(req))
    resp = decide(
        dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), "--explain", "notes", str(tmp_path / "req.json")
    )
    assert resp["explanation"]["level"] == "EXPLAIN_LEVEL_NOTES"


@pytest.mark.parametrize(("example", "outcome"), OUTCOMES.items())
def test_the_same_files_work_with_grpcurl_through_reflection(
    dev_stack: DevStack, example: str, outcome: str, tmp_path: Path
) -> None:
    # The example with its tokens, as a PEP would send it (the tokens are plain string fields).
    req = json_format.Parse((EXAMPLES / example).read_text(), pb.DecideRequest())
    devissuer.forward_tokens(req, dev_stack.issuers)
    (tmp_path / example).write_text(json_format.MessageToJson(req))
    out = subprocess.run(
        [str(GRPCURL), "-plaintext", "-d", "@", dev_stack.addr, "pdp.v1.DecisionService/Decide"],
        stdin=(tmp_path / example).open(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["outcome"] == outcome


def test_decide_reports_unreadable_input_clearly(dev_stack: DevStack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"context": {"agent": {"id": "a"}, "action": {"tool": "t"}, "colour": "red"}}')
    out = subprocess.run([*PDP, "decide", "--addr", dev_stack.addr, str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "colour" in out.stderr

    bad.write_text('{"context": {"action": {"tool": "t"}}}')
    out = subprocess.run([*PDP, "decide", "--addr", dev_stack.addr, str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "INVALID_ARGUMENT: context.agent: is required" in out.stderr


def test_several_files_are_one_decide_batch(dev_stack: DevStack) -> None:
    names = list(OUTCOMES)
    resp = decide(dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), *(str(EXAMPLES / n) for n in names))
    assert [r["outcome"] for r in resp["responses"]] == [OUTCOMES[n] for n in names]
    assert len({r["decisionId"] for r in resp["responses"]}) == len(names)

    files = [str(EXAMPLES / n) for n in names[:2]]
    out = subprocess.run(
        [*PDP, "decide", "--addr", dev_stack.addr, "--explain", "notes", *files], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--explain needs a single request" in out.stderr


def test_ctrl_c_stops_pdp_and_opa(dev_stack: DevStack) -> None:
    dev_stack.process.send_signal(signal.SIGINT)
    assert dev_stack.process.wait(timeout=20) == 0
    with socket.socket() as s:  # OPA's port is free again: the sidecar is gone too
        s.bind(("127.0.0.1", dev_stack.opa_port))
    assert "OPA sidecar stopped" in dev_stack.log.read_text()


def test_a_killed_pdp_dev_takes_its_opa_with_it(dev_stack: DevStack) -> None:
    dev_stack.process.kill()  # SIGKILL: no handler runs, yet OPA must not outlive it holding the port
    dev_stack.process.wait(timeout=20)

    def nobody_listens() -> bool:
        try:
            socket.create_connection(("127.0.0.1", dev_stack.opa_port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_for(nobody_listens, timeout_s=10, what="OPA gone after SIGKILL of pdp dev")


def test_make_run_kill_switch_and_budgets_on_the_embedded_store(dev_stack: DevStack, tmp_path: Path) -> None:
    # `make run` is `pdp dev`: its state store is the SQLite file beside its log.
    def agents(*args: str) -> dict:
        out = subprocess.run(
            [*PDP, "agents", *args, "--addr", dev_stack.addr], capture_output=True, text=True, cwd=ROOT, check=True
        )
        return json.loads(out.stdout)

    paid = decide(dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), str(EXAMPLES / "fintech-allow-transfer.json"))
    assert paid["outcome"] == "OUTCOME_ALLOW", paid["reasons"]
    assert {b["budget"] for b in claims_of(paid["record"])["result"]["budgets"]} >= {"fintech.transfer_daily"}
    suspended = agents("suspend", "support-bot", "--reason", "runaway loop", "--until", "1h")
    assert suspended["record"] and int(suspended["logIndex"]) > 0
    denied = decide(dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), str(EXAMPLES / "allow-crm-lookup.json"))
    assert denied["outcome"] == "OUTCOME_DENY"
    assert [r["code"] for r in denied["reasons"]] == ["agent.suspended"]
    assert [s["value"] for s in agents("list")["suspensions"]] == ["support-bot"]
    assert agents("resume", "support-bot", "--reason", "fixed")["wasActive"] is True
    again = json.loads((EXAMPLES / "allow-crm-lookup.json").read_text())
    again["requestId"] = "after-resume"  # the same request id would be answered from the log: DENY
    (tmp_path / "again.json").write_text(json.dumps(again))
    assert (
        decide(dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), str(tmp_path / "again.json"))["outcome"]
        == "OUTCOME_ALLOW"
    )


def test_help_lists_the_commands() -> None:
    out = subprocess.run([*PDP, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "dev", "decide"):
        assert command in out


def test_bad_configuration_is_refused_at_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [*PDP, "serve"], capture_output=True, text=True, env={**os.environ, "PDP_OPA_TIMEOUT_MS": "soon"}, timeout=20
    )
    assert out.returncode == 2
    assert "PDP_OPA_TIMEOUT_MS" in out.stderr


def test_keys_and_audit_commands(dev_stack: DevStack, tmp_path: Path) -> None:
    for example in OUTCOMES:
        decide(dev_stack.addr, "--dev-issuer", str(dev_stack.issuers), str(EXAMPLES / example))
    dev_stack.process.send_signal(signal.SIGINT)  # final checkpoint on the way out
    dev_stack.process.wait(30)
    jwks = tmp_path / "keys" / "jwks.json"
    ok = subprocess.run(
        [*PDP, "audit", "verify", str(tmp_path / "log"), "--jwks", str(jwks)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    # the REQUIRE_APPROVAL example also opened an escalation: one signed step
    assert ok.stdout.startswith("OK: 4 entries (3 decisions, 0 outcome reports, 1 escalation steps)")

    seg = sorted((tmp_path / "log").glob("segment-*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 1
    seg.write_bytes(bytes(data))
    bad = subprocess.run(
        [*PDP, "audit", "verify", str(tmp_path / "log"), "--jwks", str(jwks)], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("FAILED: entry ")

    other = tmp_path / "other-keys"
    assert (
        subprocess.run([*PDP, "keys", "generate", "--dir", str(other)], check=True, capture_output=True).returncode == 0
    )
    again = subprocess.run([*PDP, "keys", "generate", "--dir", str(other)], capture_output=True, text=True)
    assert again.returncode == 2 and "rotate" in again.stderr
    kept = subprocess.run(
        [*PDP, "keys", "generate", "--if-missing", "--dir", str(other)], capture_output=True, text=True
    )
    assert kept.returncode == 0 and "(kept)" in kept.stdout
    subprocess.run([*PDP, "keys", "rotate", "--dir", str(other)], check=True, capture_output=True)
    printed = json.loads(
        subprocess.run([*PDP, "keys", "jwks", "--dir", str(other)], check=True, capture_output=True, text=True).stdout
    )
    assert len(printed["keys"]) == 2


def serve_fails(env: dict[str, str]) -> str:
    """Runs ``pdp serve`` expecting it to refuse to start; returns its one line of standard error."""
    out = subprocess.run([*PDP, "serve"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_serve_without_a_key_directory_says_how_to_make_one(tmp_path: Path) -> None:
    env = {**os.environ, "PDP_KEY_DIR": str(tmp_path / "no-keys"), "PDP_LOG_DIR": str(tmp_path / "log")}
    line = serve_fails(env)
    assert line.startswith("pdp serve: configuration error: no signing key in")
    assert "pdp keys generate" in line


def test_serve_on_a_taken_port_names_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = serve_env(tmp_path, port=port, opa_url="http://127.0.0.1:1")
        line = serve_fails(env)
    assert line.startswith(f"pdp serve: configuration error: PDP_LISTEN: cannot listen on 127.0.0.1:{port}")


def test_dev_with_a_taken_opa_address_says_so_without_a_traceback(tmp_path: Path, opa_bin: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        out = subprocess.run(
            [*PDP, "dev", "--bundle", "rego", "--opa-addr", addr],
            capture_output=True,
            text=True,
            env=dev_env(tmp_path, port=free_port(), opa_bin=opa_bin),
            cwd=ROOT,
            timeout=120,
        )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]  # OPA's own log lines (the address in use) come before
    assert last.startswith("pdp dev: opa exited with status"), out.stderr
    assert "address in use" in last


def test_serve_on_a_damaged_log_says_what_to_do(tmp_path: Path) -> None:
    env = serve_env(tmp_path, port=free_port(), opa_url="http://127.0.0.1:1")
    ring = keys.KeyRing.load(tmp_path / "keys")
    log = Log.open(
        tmp_path / "log",
        signing_key=ring.private,
        public_keys=keys.public_keys(ring.jwks),
        origin=Settings().log_origin,
        checkpoint_interval_s=3600,
    )

    def entry(index: int) -> bytes:
        return records.sign({"pdp": {"log_index": str(index)}}, ring, typ=records.TYP_DECISION).encode()

    for _ in range(3):
        log.append(entry)
    log.close()  # the final checkpoint covers all three
    segment = tmp_path / "log" / "segment-000000.log"
    data = bytearray(segment.read_bytes())
    data[10] ^= 1
    segment.write_bytes(bytes(data))
    line = serve_fails(env)
    assert line.startswith("pdp serve: ")
    assert "pdp audit verify" in line


def test_a_pep_obtains_tokens_from_the_dev_issuers_and_forwards_them(dev_stack: DevStack, tmp_path: Path) -> None:
    # `pdp dev` made the dev issuers and trusts them.
    assert (dev_stack.issuers / "trust.json").is_file()
    example = EXAMPLES / "fintech-allow-transfer.json"

    def mint(*args: str) -> str:
        out = subprocess.run(
            [*PDP, "dev-issuer", *args, "--dir", str(dev_stack.issuers)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    req = json.loads(example.read_text())
    req["requestId"] = "forwarded-by-hand"
    req["context"]["principalToken"] = mint("token", "--sub", "bob@bank.example", "--roles", "treasurer")
    req["context"]["riskAssertion"] = mint("risk", "--request", str(example), "--score", "12")
    req["context"]["lineageAttestations"] = [
        mint("lineage", "--request", str(example), "--source", "core-banking", "--kind", "ledger", "--quality", "0.99")
    ]
    (tmp_path / "req.json").write_text(json.dumps(req))
    resp = decide(dev_stack.addr, str(tmp_path / "req.json"))
    assert resp["outcome"] == "OUTCOME_ALLOW"
    assert _trust_of(resp["record"]) == {
        "principal": {"issuer": devissuer.ISSUERS["principal"], "id": "bob@bank.example"},
        "risk": {"issuer": devissuer.ISSUERS["risk"]},
        "lineage": [{"issuer": devissuer.ISSUERS["lineage"], "source": "core-banking"}],
        "rejected": [],
    }
    # Without the tokens the same request rests on the caller's word alone: nothing is verified.
    bare = decide(dev_stack.addr, str(example))
    assert _trust_of(bare["record"]) == {"principal": None, "risk": None, "lineage": [], "rejected": []}

    bad = subprocess.run(
        [*PDP, "dev-issuer", "risk", "--dir", str(tmp_path / "nowhere"), "--request", str(example), "--score", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "pdp dev-issuer init" in bad.stderr


def _trust_of(record: str) -> dict:
    """The provenance summary of a record (its ``pdp.trust``)."""
    payload = record.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["pdp"]["trust"])
