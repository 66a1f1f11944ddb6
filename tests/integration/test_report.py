"""`pdp report` on a log written by the real PDP and OPA: exact figures, a tampered log, the evidence
pack checked with Go's note verifier, and the HTML opened in a real headless chromium."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.ledger.log import frame, read_frames
from pdp.sidecar import OpaSidecar
from pdp.v1 import admin_pb2 as admin_pb
from pdp.v1 import admin_pb2_grpc as admin_grpc
from pdp.v1 import decision_pb2 as pb
from tests.helpers import BUNDLE, CHROMIUM, CHROMIUM_ARGS, ROOT, Pdp, load_request

pytestmark = pytest.mark.integration

PDP = [sys.executable, "-m", "pdp"]
MASKED = "/asserted/principal/id"  # the principal the caller names (policy input v2)
SECTIONS = (
    "summary",
    "over-time",
    "autonomy",
    "rules",
    "audit",
    "kill-switch",
    "shadow",
    "lineage",
    "latency",
    "denials",
    "agents",
    "privacy",
    "provenance",
    "catalog",
)
# The known mix: example request → how many times it is sent (the outcome is in its name).
MIX = {
    "allow-crm-lookup.json": 3,
    "fintech-allow-transfer.json": 1,
    "deny-tool-not-granted.json": 2,
    "fintech-deny-sanctioned.json": 1,
    "require-approval-high-risk.json": 1,
}
REPORTED = 2  # outcome reports for the first two allows
SWITCHES = 2  # payments-agent suspended (closing its open escalation), then resumed
FAIL_CLOSED = 2  # allow-crm-lookup again with OPA stopped


@dataclasses.dataclass(frozen=True)
class KnownLog:
    log_dir: Path
    jwks: Path
    records: list[dict[str, Any]]  # the claims of every decision, from the answers
    closed: list[str]  # the escalations the kill switch closed


def _claims(record: str) -> dict[str, Any]:
    payload = record.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@pytest.fixture
def known_log(opa: OpaSidecar, start_pdp: Callable[..., Pdp], tmp_path: Path) -> KnownLog:
    home = tmp_path / "pdp"
    # Static masking only (PDP_MASK_PATH empty): the figures count exactly what MASKED hides.
    pdp = start_pdp(opa.url, key_dir=home / "keys", log_dir=home / "log", mask_pointers=(MASKED,), mask_path="")
    answers = [pdp.stub.Decide(load_request(name), timeout=5) for name, n in MIX.items() for _ in range(n)]
    allows = [a for a in answers if a.outcome == pb.OUTCOME_ALLOW]
    for a in allows[:REPORTED]:
        pdp.stub.ReportOutcome(pb.ReportOutcomeRequest(decision_id=a.decision_id, status=pb.ACTION_STATUS_EXECUTED))
    admin = admin_grpc.AdminServiceStub(pdp.channel)  # loopback: the admin role
    drill = dict(kind="agent", value="payments-agent", operator="oncall")
    closed = admin.Suspend(admin_pb.SuspendRequest(**drill, reason="report drill"), timeout=10).closed_escalations
    admin.Resume(admin_pb.ResumeRequest(**drill, reason="drill over"), timeout=10)
    opa.stop()
    answers += [pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5) for _ in range(FAIL_CLOSED)]
    pdp.server.stop(1)  # the final checkpoint covers every entry
    return KnownLog(home / "log", home / "keys" / "jwks.json", [_claims(a.record) for a in answers], list(closed))


def report(log: KnownLog, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDP, "report", str(log.log_dir), "--jwks", str(log.jwks), "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def nearest_rank(values: list[int], p: int) -> int:
    return sorted(values)[math.ceil(p * len(values) / 100) - 1]


def expected_rules(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Reason-code counts (decisions in which the code fired) per agent and tool, from the signed
    answers (not from the log)."""
    fired: dict[str, Any] = {}
    for c in records:
        if c["pdp"]["indeterminate"]:
            continue
        for code in dict.fromkeys(c["pdp"]["reasons"]):  # a rule fires once per decision, whatever its messages
            r = fired.setdefault(code, {"count": 0, "by_agent": {}, "by_tool": {}})
            r["count"] += 1
            agent, tool = c["pdp"]["agent"]["id"], c["pdp"]["tool"]
            r["by_agent"][agent] = r["by_agent"].get(agent, 0) + 1
            r["by_tool"][tool] = r["by_tool"].get(tool, 0) + 1
    return fired


def expected_lineage(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Lineage completeness from the signed answers: the PDP's summary (pdp.trust), the looked-up
    classification (pdp.facts) and the lineage attestations the PDP verified."""
    summarised = [c for c in records if "trust" in c["pdp"]]
    labels = [c["pdp"].get("facts", {}).get("resource", {}) for c in summarised]
    classified = [c for c, r in zip(summarised, labels, strict=True) if r.get("classification") not in (None, "public")]
    verified = [c for c in classified if c["pdp"]["trust"]["lineage"]]
    return {
        "source": "provenance summary",
        "decisions_with_summary": len(summarised),
        "on_classified_data": len(classified),
        "with_verified_lineage": len(verified),
        "completeness": len(verified) / len(classified),
        "note": "",
    }


def test_every_figure_of_a_log_with_a_known_mix(known_log: KnownLog, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = report(known_log, out, "--bundle", str(BUNDLE))
    assert done.returncode == 0, done.stderr
    f = json.loads((out / "report.json").read_text())
    records = known_log.records
    n = sum(MIX.values()) + FAIL_CLOSED

    by_outcome = {"allow": 4, "require_approval": 1, "deny": 3, "fail_closed": FAIL_CLOSED}
    assert f["decisions"]["total"] == n
    assert f["decisions"]["by_outcome"] == by_outcome
    buckets = f["decisions"]["over_time"]["buckets"]
    assert f["decisions"]["over_time"]["bucket_s"] == 60
    assert {k: sum(b[k] for b in buckets) for k in by_outcome} == by_outcome
    assert f["autonomy"] == {
        "allowed_without_human": 4,
        "allowed_after_approval": 0,
        "autonomy_rate": 4 / n,
        "escalated": 1,
        "escalation_rate": 1 / n,
    }
    # the REQUIRE_APPROVAL decision opened an escalation (one signed step); the kill switch closed it
    assert f["escalations"]["source"] == "escalation records" and f["escalations"]["opened"] == 1
    assert len(known_log.closed) == 1 and f["escalations"]["by_state"]["closed_by_kill_switch"] == 1
    assert f["escalations"]["by_state"]["open"] == 0
    assert f["escalations"]["approval_rate"] == 0.0 and f["escalations"]["time_to_approval_s"] is None
    kill = f["kill_switch"]
    assert kill["source"] == "suspension records"
    assert (kill["suspended"], kill["resumed"], kill["escalations_closed"]) == (1, 1, 1)
    assert [
        (c["action"], c["kind"], c["value"], c["operator"], c["reason"], c["until"], c["closed_escalations"])
        for c in kill["changes"]
    ] == [
        ("suspend", "agent", "payments-agent", "oncall", "report drill", None, known_log.closed),
        ("resume", "agent", "payments-agent", "oncall", "drill over", None, []),
    ]
    assert all(c["by"] and c["at"] for c in kill["changes"])
    assert kill["denied_by_code"] == {"agent.suspended": 0, "principal.suspended": 0, "tool.suspended": 0}
    assert f["shadow"]["source"] == "none" and f["shadow"]["divergences"] == 0

    expected = expected_rules(records)
    assert "tool.granted" in expected and "tool.not_granted" in expected and "risk.high" in expected
    for code, r in expected.items():
        assert f["rules"]["fired"][code] == {
            **r,
            "fire_rate": r["count"] / n,
            "catalog": "rule-" + code.replace(".", "-").replace("_", "-"),
        }
    assert set(f["rules"]["fired"]) == set(expected)
    catalog = json.loads((out / "catalog.json").read_text())
    assert f["rules"]["never_fired"] == sorted({r["code"] for r in catalog["rules"]} - set(expected))
    assert f["rules"]["not_in_catalog"] == [] and f["rules"]["pdp_codes"] == []

    assert f["audit"] == {
        "allows": 4,
        "allows_with_outcome": REPORTED,
        "outcome_coverage": REPORTED / 4,
        "allows_overdue": 0,  # records live 300 s
        "allows_pending": 4 - REPORTED,
        "overdue": [],
        "fail_closed": {"total": FAIL_CLOSED, "by_code": {"pdp.opa_unavailable": FAIL_CLOSED}},
    }
    # Every decision carries the PDP's summary (the fail-closed ones too, without facts); the 8 with a
    # verdict have looked-up labels (internal or confidential, none public); the PDP verified
    # core-banking's lineage attestation for the 3
    # transfers that carry one (load_request forwards the dev issuers' tokens).
    assert (
        f["lineage"]
        == expected_lineage(records)
        == {
            "source": "provenance summary",
            "decisions_with_summary": n,
            "on_classified_data": n - FAIL_CLOSED,
            "with_verified_lineage": 3,
            "completeness": 3 / (n - FAIL_CLOSED),
            "note": "",
        }
    )
    for timer in ("timer_rego_query_eval_ns", "timer_pdp_opa_roundtrip_ns"):
        values = [c["metrics"][timer] for c in records if not c["pdp"]["indeterminate"]]
        assert f["latency"]["timers"][timer] == {
            "count": n - FAIL_CLOSED,
            **{f"p{p}": nearest_rank(values, p) for p in (50, 90, 99)},
            "max": max(values),
        }
    assert f["denials"] == {
        "top_agents": [["support-bot", 2], ["payments-agent", 1]],
        "top_tools": [["payments.transfer", 3]],
    }
    assert {
        a: (v["decisions"], v["allow"], v["require_approval"], v["deny"], v["fail_closed"], v["tools"])
        for a, v in f["agents"].items()
    } == {
        "payments-agent": (3, 1, 1, 1, 0, ["payments.transfer"]),
        "support-bot": (7, 3, 0, 2, 2, ["crm.lookup", "payments.transfer"]),
    }
    assert f["privacy"] == {"decisions_masked": n, "decisions_erased": 0, "masked": {MASKED: n}, "erased": {}}
    assert all(c["input"]["asserted"]["principal"]["id"] == "**masked**" for c in records)

    prov = f["provenance"]
    audit = subprocess.run(
        [*PDP, "audit", "verify", str(known_log.log_dir), "--jwks", str(known_log.jwks)],
        capture_output=True,
        text=True,
        check=True,
    )
    steps = 1  # the escalation opened by the REQUIRE_APPROVAL decision
    assert prov["checkpoint"]["size"] == n + REPORTED + steps + SWITCHES
    assert prov["checkpoint"]["root_hex"] in audit.stdout  # the root pdp audit verify re-derives
    assert prov["checkpoint"]["origin"] == "pdp.local/decisions"
    assert prov["log"] == {
        "entries_verified": n + REPORTED + steps + SWITCHES,
        "checkpoints": prov["log"]["checkpoints"],
        "entries_after_checkpoint": 0,
    }
    assert prov["records"] == {"decision": n, "outcome": REPORTED, "escalation": steps, "suspension": SWITCHES}
    assert prov["unknown_record_types"] == {} and prov["unreadable_records"] == {}
    revisions: dict[str, dict[str, int]] = {}
    for c in records:
        for name, b in c["bundles"].items():
            revisions.setdefault(name, {}).setdefault(b["revision"], 0)
            revisions[name][b["revision"]] += 1
    assert prov["bundles"] == revisions and sum(sum(r.values()) for r in revisions.values()) == n - FAIL_CLOSED
    assert prov["keys"]["kids"] == [k["kid"] for k in json.loads(known_log.jwks.read_text())["keys"]]
    assert f["period"]["first_decision"] <= f["period"]["last_decision"] <= f["period"]["as_of"]

    # The same figures for a period that holds none of the decisions.
    later = report(known_log, tmp_path / "later", "--since", "2999-01-01")
    assert later.returncode == 0, later.stderr
    assert json.loads((tmp_path / "later" / "report.json").read_text())["decisions"]["total"] == 0


def test_a_tampered_log_gets_no_report(known_log: KnownLog, tmp_path: Path) -> None:
    # An allow turned into a deny, with the frame's CRC fixed: only the signature can tell.
    segment = known_log.log_dir / "segment-000000.log"
    frames, _ = read_frames(segment.read_bytes())
    index = next(i for i, f in enumerate(frames) if _claims(f.payload.decode())["pdp"].get("outcome") == "allow")
    head, payload, sig = frames[index].payload.decode().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["pdp"]["outcome"] = "deny"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    entries = [
        frame(f"{head}.{forged}.{sig}".encode()) if i == index else frame(f.payload) for i, f in enumerate(frames)
    ]
    segment.chmod(0o644)
    segment.write_bytes(b"".join(entries))

    done = report(known_log, tmp_path / "report")
    assert done.returncode == 1
    assert f"entry {index}" in done.stderr and "signature does not verify" in done.stderr
    assert "no report written" in done.stderr
    assert not (tmp_path / "report" / "report.json").exists()
    assert not (tmp_path / "report" / "report.html").exists()


def test_the_evidence_pack_verifies_with_go_and_a_jose_library(known_log: KnownLog, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = report(known_log, out, "--evidence")
    assert done.returncode == 0, done.stderr
    pack = out / "evidence"
    figures = json.loads((out / "report.json").read_text())
    assert (pack / "checkpoint.txt").read_text() == figures["provenance"]["checkpoint"]["note"]
    assert (pack / "jwks.json").read_bytes() == known_log.jwks.read_bytes()
    note_keys = (pack / "note-keys.txt").read_text().split()
    notecheck = ROOT / ".bin" / "notecheck"
    checked = subprocess.run(
        [str(notecheck), *note_keys], input=(pack / "checkpoint.txt").read_bytes(), capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.decode().split("\n")[1] == str(figures["provenance"]["checkpoint"]["size"])
    readme = (pack / "README.md").read_text()
    assert "pdp audit verify" in readme and "notecheck" in readme and "jwcrypto" in readme
    assert figures["provenance"]["checkpoint"]["root_hex"] in readme
    sums = subprocess.run(["sha256sum", "-c", "evidence/SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr

    # The README's JOSE recipe, run as written on this log, prints the checkpoint's root.
    recipe = readme.split("```python\n", 1)[1].split("```", 1)[0].replace("LOG_DIR", str(known_log.log_dir))
    ran = subprocess.run([sys.executable, "-c", recipe], cwd=out, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == figures["provenance"]["checkpoint"]["root_hex"]


def test_policy_catalog_lists_every_rule_with_its_code_and_coverage(tmp_path: Path) -> None:
    done = subprocess.run(
        [*PDP, "policy", "catalog", str(BUNDLE), "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    rules = {r["code"]: r for r in json.loads((tmp_path / "catalog.json").read_text())["rules"]}
    # The policy guide's reason-code table: | `code` | effect | pack | meaning | (its other tables
    # name input paths such as `input.bound`, which are not codes).
    documented = {
        code
        for line in (BUNDLE / "README.md").read_text().splitlines()
        if line.startswith("| `")
        and re.fullmatch(r"[a-z]+\.[a-z_]+", code := line.split("`")[1])
        and line.split("|")[2].split()[0] in {"allow", "deny", "approval"}
    }
    assert len(documented) >= 20 and documented <= set(rules)  # every code the policy guide documents
    assert {"resource.required", "hipaa.purpose_mismatch", "mcp.approval_required"} <= documented
    sanctions = rules["fintech.sanctioned_counterparty"]
    assert (sanctions["severity"], sanctions["pack"], sanctions["rule"]) == ("critical", "fintech", "deny")
    assert sanctions["title"] and sanctions["description"]
    assert all(r["coverage"] == 100 for r in rules.values())  # make policy-check holds the bundle at 100%
    markdown = (tmp_path / "catalog.md").read_text()
    assert all(f'<a id="{r["anchor"]}"></a>' in markdown for r in rules.values())


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of a real headless chromium (Debian's), with a fresh profile; never a downloaded browser."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="pdp-chromium-") as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1024, "height": 1300},
            args=CHROMIUM_ARGS,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_the_html_report_renders_every_section_offline_in_chromium(
    known_log: KnownLog, tmp_path: Path, browser_page: Any
) -> None:
    out = tmp_path / "report"
    assert report(known_log, out, "--bundle", str(BUNDLE)).returncode == 0
    page = browser_page
    problems: list[str] = []
    fetched: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: fetched.append(r.url))
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")

    assert page.title() == "PDP governance report"
    for sid in SECTIONS:
        section = page.locator(f"section#{sid}")
        assert section.is_visible(), sid
        assert section.locator("h2").inner_text()
    plotted = {"over-time": 10, "rules": 1, "audit": 1, "latency": 1, "denials": 1, "autonomy": 1}
    for sid, bars in plotted.items():
        svg = page.locator(f"section#{sid} svg.plot")
        assert svg.count() >= 1, sid
        box = svg.first.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 10, sid
        assert page.locator(f"section#{sid} svg.plot rect.bar").count() >= min(bars, 1), sid
    # One bar segment per outcome present in a time bucket.
    buckets = json.loads((out / "report.json").read_text())["decisions"]["over_time"]["buckets"]
    segments = sum(1 for b in buckets for k in ("allow", "require_approval", "deny", "fail_closed") if b[k])
    assert page.locator("section#over-time rect.bar").count() == segments >= 4

    # Every reason code links to its catalog entry, and the entry is on the page.
    links = page.locator("section#rules a[href^='#rule-']")
    assert links.count() >= 8
    for href in {links.nth(i).get_attribute("href") for i in range(links.count())}:
        assert href is not None and page.locator(href).count() == 1, href
    assert page.locator("section#provenance pre").inner_text().startswith("pdp.local/decisions\n")
    assert fetched == [(out / "report.html").as_uri()]  # no external asset, nothing else loaded
    assert problems == []
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)


RULES = """package pdp.packs.demo

# METADATA
# title: Tested rule
# description: Fires on a test.
# custom:
#   code: demo.tested
#   severity: low
deny contains rego.metadata.rule().custom.code if {
	input.x == 1
}

# METADATA
# title: Untested rule
# custom:
#   code: demo.untested
#   severity: high
deny contains rego.metadata.rule().custom.code if {
	input.x == 2
}
"""
TESTS = """package pdp.packs.demo_test

import data.pdp.packs.demo

test_tested_fires if "demo.tested" in demo.deny with input as {"x": 1}
"""


def test_catalog_coverage_per_rule_and_a_code_yielded_twice(opa_bin: str, tmp_path: Path) -> None:
    from pdp.policy import catalog

    bundle = tmp_path / "bundle"
    (bundle / "pdp" / "packs" / "demo").mkdir(parents=True)
    (bundle / ".manifest").write_text('{"revision": "demo-1", "roots": ["pdp"]}')
    (bundle / "pdp" / "packs" / "demo" / "demo.rego").write_text(RULES)
    (bundle / "pdp" / "packs" / "demo" / "demo_test.rego").write_text(TESTS)
    got = catalog.load(bundle, opa_bin=opa_bin)
    assert got.revision == "demo-1"
    assert [(r.code, r.severity, r.pack, r.title, r.coverage) for r in got.rules] == [
        ("demo.tested", "low", "demo", "Tested rule", 100.0),
        ("demo.untested", "high", "demo", "Untested rule", 0.0),  # no test made it fire
    ]

    (bundle / "pdp" / "packs" / "demo" / "demo.rego").write_text(RULES.replace("demo.untested", "demo.tested"))
    with pytest.raises(catalog.CatalogError, match=r"reason code demo.tested is yielded by .*demo.rego:\d+ and"):
        catalog.load(bundle, opa_bin=opa_bin, coverage=False)
