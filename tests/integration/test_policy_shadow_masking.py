"""Shadow candidates and policy-driven masking, through a real PDP in front of real OPAs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pdp import keys
from pdp.config import Settings
from pdp.server import create_server
from pdp.sidecar import OpaSidecar
from pdp.telemetry import Telemetry
from pdp.trust import TrustConfig
from pdp.v1 import admin_pb2 as admin_pb
from pdp.v1 import admin_pb2_grpc as admin_grpc
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import ROOT, dev_issuers, load_request, wait_for

V1 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v1"
V2 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v2"


@dataclasses.dataclass
class Running:
    stub: pb_grpc.DecisionServiceStub
    admin: admin_grpc.AdminServiceStub
    home: Path
    reader: InMemoryMetricReader

    def entries(self) -> list[tuple[str, dict[str, Any], bytes]]:
        """Every logged entry: its JWS typ, its claims, and its exact bytes."""
        out = []
        for segment in sorted((self.home / "log").glob("segment-*.log")):
            data, at = segment.read_bytes(), 0
            while at + 4 <= len(data):
                n = int.from_bytes(data[at : at + 4], "big")
                token = data[at + 4 : at + 4 + n]
                at += 4 + n + 4  # length, payload, CRC-32
                head, payload, _ = token.split(b".")
                header = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
                claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
                out.append((header["typ"], claims, token))
        return out

    def points(self, name: str) -> dict[str, int]:
        data = self.reader.get_metrics_data()
        found: dict[str, int] = {}
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            found[",".join(f"{k}={v}" for k, v in sorted(p.attributes.items()))] = p.value
        return found


@pytest.fixture
def run_pdp(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """A real PDP whose metrics are read in memory; its own key and log under tmp_path; it trusts the
    dev issuers whose tokens :func:`load_request` forwards."""
    started: list[Any] = []

    def start(opa_url: str, **overrides: Any) -> Running:
        home = tmp_path / f"pdp-{len(started)}"
        keys.ensure(home / "keys")
        settings = dataclasses.replace(
            Settings(
                listen="127.0.0.1:0",
                opa_url=opa_url,
                key_dir=home / "keys",
                log_dir=home / "log",
                trust=TrustConfig.load(dev_issuers() / "trust.json"),
            ),
            **overrides,
        )
        reader = InMemoryMetricReader()
        telemetry = Telemetry({})
        telemetry.meter_provider = MeterProvider(metric_readers=[reader])
        server, port = create_server(settings, telemetry)
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return Running(pb_grpc.DecisionServiceStub(channel), admin_grpc.AdminServiceStub(channel), home, reader)

    yield start
    for server, channel in started:
        channel.close()
        server.stop(1)


def test_shadow_divergences_are_signed_linked_records_counted_by_kind(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running], opa_bin: str
) -> None:
    live, candidate = start_opa(V1), start_opa(V2)
    pdp = run_pdp(live.url, shadow_opa_url=candidate.url, shadow_sample=1.0)
    answers = {}
    for name in [
        "allow-crm-lookup.json",
        "allow-crm-lookup.json",
        "defense-allow-read.json",
        "healthcare-allow-treatment.json",
    ]:
        r = pdp.stub.Decide(load_request(name), timeout=5)
        answers[r.decision_id] = r
    # The live policy decides: crm.lookup allowed (v1), intel.read denied (v1).
    assert sorted(r.outcome for r in answers.values()) == [1, 1, 1, 2]

    def shadows() -> list[dict[str, Any]]:
        return [c for typ, c, _ in pdp.entries() if typ == "pdp-shadow+jws"]

    wait_for(lambda: pdp.points("pdp.shadow.evaluated") == {"": 4}, timeout_s=10, what="four shadow evaluations")
    by_kind: dict[str, int] = {}
    for s in shadows():
        decision = answers[s["decision_id"]]
        assert s["pdp"]["decision_record_digest"] == "sha256:" + hashlib.sha256(decision.record.encode()).hexdigest()
        assert s["pdp"]["decision_log_index"] == str(decision.log_index)
        assert s["bundles"] == {V2.name: {"revision": "lifecycle-2"}} or list(s["bundles"].values()) == [
            {"revision": "lifecycle-2"}
        ]
        assert "input" not in s, "a shadow record links to the decision; it carries no input"
        by_kind[s["pdp"]["kind"]] = by_kind.get(s["pdp"]["kind"], 0) + 1
    assert by_kind == {"allow->deny": 2, "deny->allow": 1}
    assert pdp.points("pdp.shadow.divergences") == {"kind=allow->deny": 2, "kind=deny->allow": 1}
    assert len(shadows()) == 3
    # The log with shadow records verifies from its files and public keys alone.
    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp",
            "audit",
            "verify",
            str(pdp.home / "log"),
            "--jwks",
            str(pdp.home / "keys" / "jwks.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert audit.returncode == 0, audit.stderr


def test_the_pdps_own_denials_are_not_compared_with_the_candidate(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running]
) -> None:
    """A kill-switch DENY is the PDP's answer, not the live policy's: the candidate (which would allow
    the same request) is not asked, so no false ``deny->allow`` divergence is logged."""
    live, candidate = start_opa(V1), start_opa(V2)
    pdp = run_pdp(live.url, shadow_opa_url=candidate.url, shadow_sample=1.0)
    pdp.admin.Suspend(admin_pb.SuspendRequest(kind="agent", value="clinical-assistant", reason="drill"), timeout=10)
    suspended = pdp.stub.Decide(load_request("healthcare-allow-treatment.json"), timeout=5)
    assert [r.code for r in suspended.reasons] == ["agent.suspended"]
    diverging = pdp.stub.Decide(load_request("defense-allow-read.json"), timeout=5)  # v1 denies, v2 allows
    wait_for(lambda: pdp.points("pdp.shadow.evaluated") == {"": 1}, timeout_s=10, what="one shadow evaluation")
    shadows = [c for typ, c, _ in pdp.entries() if typ == "pdp-shadow+jws"]
    assert [s["decision_id"] for s in shadows] == [diverging.decision_id]
    assert pdp.points("pdp.shadow.divergences") == {"kind=deny->allow": 1}


def test_shadow_sample_zero_evaluates_nothing(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running]
) -> None:
    live, candidate = start_opa(V1), start_opa(V2)
    pdp = run_pdp(live.url, shadow_opa_url=candidate.url, shadow_sample=0.0)
    for _ in range(3):
        pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert [typ for typ, _, _ in pdp.entries()] == ["pdp-decision+jws"] * 3
    assert pdp.points("pdp.shadow.evaluated") == {}


def test_a_shadow_that_is_down_never_fails_a_live_answer(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running]
) -> None:
    live, candidate = start_opa(V1), start_opa(V2)
    candidate.stop()
    pdp = run_pdp(live.url, shadow_opa_url=candidate.url, shadow_sample=1.0)
    r = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert r.outcome == 1 and not r.indeterminate
    wait_for(lambda: pdp.points("pdp.shadow.dropped") != {}, timeout_s=10, what="the drop to be counted")
    assert pdp.points("pdp.shadow.dropped") == {"why=pdp.opa_unavailable": 1}


SECRETS = {
    "healthcare-allow-treatment.json": [b"patient-4711"],
    "fintech-allow-transfer.json": [b"DE89370400440532013000", b"ACC-1001"],
}


def test_policy_masked_fields_never_reach_the_log_in_clear(opa: OpaSidecar, run_pdp: Callable[..., Running]) -> None:
    pdp = run_pdp(opa.url)
    outcomes = {}
    for name in SECRETS:
        outcomes[name] = pdp.stub.Decide(load_request(name), timeout=5).outcome
    batch_names = list(SECRETS)
    pdp.stub.DecideBatch(pb.DecideBatchRequest(requests=[load_request(n) for n in batch_names]), timeout=5)
    # Masking happens after the policy decided: the verdicts are the unmasked ones.
    assert outcomes == {"healthcare-allow-treatment.json": 1, "fintech-allow-transfer.json": 1}
    entries = pdp.entries()
    assert len(entries) == 4
    raw = b"".join(p.read_bytes() for p in (pdp.home / "log").iterdir() if p.is_file())
    for _, claims, token in entries:
        clear = json.dumps(claims).encode()
        for secret in (s for secrets in SECRETS.values() for s in secrets):
            assert secret not in clear and secret not in token and secret not in raw
    masked = {c["pdp"]["tool"]: (c["masked"], c["erased"]) for _, c, _ in entries}
    assert "/action/arguments/patient_id" in masked["ehr.read"][0] and "/resource/id" in masked["ehr.read"][0]
    assert "/action/arguments/beneficiary" in masked["payments.transfer"][0]
    ehr = next(c for _, c, _ in entries if c["pdp"]["tool"] == "ehr.read")
    assert ehr["input"]["action"]["arguments"]["patient_id"] == "**masked**"
    # The catalogue's owner of the patient record (a looked-up fact) is masked in the decision too.
    assert ehr["pdp"]["facts"]["resource"]["owner"] == ehr["result"]["facts"]["resource"]["owner"] == "**masked**"
    assert ehr["pdp"]["facts"]["resource"]["classification"] == "restricted"
    assert ehr["input"]["action"]["arguments"]["fields"] == ["diagnoses", "medications", "ssn"], (
        "only what the policy names"
    )


def test_a_masking_rule_that_breaks_fails_closed(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "pdp" / "mask").mkdir(parents=True)
    (bundle / ".manifest").write_text('{"revision": "broken-mask", "roots": ["pdp"]}')
    (bundle / "pdp" / "decision.rego").write_text((V1 / "pdp" / "decision.rego").read_text())
    (bundle / "pdp" / "lifecycle").mkdir()
    (bundle / "pdp" / "lifecycle" / "data.json").write_text((V1 / "pdp" / "lifecycle" / "data.json").read_text())
    (bundle / "pdp" / "mask" / "mask.rego").write_text(
        'package pdp.mask\n\nanswer := {"decision": data.pdp.decision, "hide": {"mask": "not a list"}}\n'
    )
    pdp = run_pdp(start_opa(bundle).url)
    r = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert r.outcome == 2 and r.indeterminate and r.error_code == "pdp.policy_malformed"


def test_when_opa_is_down_the_record_keeps_nothing_the_policy_might_hide(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running]
) -> None:
    opa = start_opa()
    pdp = run_pdp(opa.url)
    opa.stop()  # no verdict, and no answer from the masking rule either
    r = pdp.stub.Decide(load_request("healthcare-allow-treatment.json"), timeout=5)
    assert r.outcome == 2 and r.indeterminate and r.error_code == "pdp.opa_unavailable"
    [(_, claims, _)] = pdp.entries()
    assert b"patient-4711" not in json.dumps(claims).encode()
    assert set(claims["input"]) <= {"agent", "caller", "bound", "request_time", "action_digest"}
    assert "/action" in claims["erased"] and claims["pdp"]["tool"] == "ehr.read"


def test_a_bundle_without_the_masking_rule_still_decides(
    start_opa: Callable[..., OpaSidecar], run_pdp: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    pdp = run_pdp(start_opa(V1).url)  # lifecycle-v1 has no pdp.mask
    for _ in range(2):
        r = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
        assert r.outcome == 1 and not r.indeterminate
    two = [load_request("allow-crm-lookup.json") for _ in range(2)]
    batch = pdp.stub.DecideBatch(pb.DecideBatchRequest(requests=two), timeout=5)
    assert [x.outcome for x in batch.responses] == [1, 1]
    assert [r.getMessage() for r in caplog.records if "no pdp/mask/answer rule" in r.getMessage()] == [
        "the bundle has no pdp/mask/answer rule: records are masked by the static pointers only"
    ]
