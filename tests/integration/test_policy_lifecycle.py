"""Policy lifecycle with real parts: signed bundles (opa build, ES256), OPA verifying them from a
file and from a real nginx bundle server, reload under load, and replay of a PDP-written log."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pdp.errors import SidecarError
from pdp.policy import bundles
from pdp.policy.watch import BundleWatch
from pdp.sidecar import OpaSidecar
from tests.bundle_server import BundleServer
from tests.helpers import BUNDLE, ROOT, Pdp, claims_of, load_request, wait_for

V1 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v1"
V2 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v2"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def key(tmp_path: Path) -> bundles.SigningKey:
    return bundles.generate(tmp_path / "bundle-key")


@pytest.fixture
def nginx() -> Iterator[BundleServer]:
    server = BundleServer()
    server.start()
    yield server
    server.stop()


@dataclasses.dataclass
class Polled:
    """A PDP in front of an OPA that polls a signed bundle (lifecycle-v1 first) from nginx."""

    nginx: BundleServer
    opa: OpaSidecar
    pdp: Pdp
    key: bundles.SigningKey
    opa_bin: str
    tmp: Path

    def publish(self, source: Path, *, tampered: bool = False) -> Path:
        built = build(source, self.tmp / f"{source.name}.tar.gz", self.key, self.opa_bin)
        if tampered:
            built = tamper(built, self.tmp / f"{source.name}-tampered.tar.gz")
        self.nginx.publish(built, "rego.tar.gz")
        return built


@pytest.fixture
def polled(
    key: bundles.SigningKey,
    opa_bin: str,
    tmp_path: Path,
    nginx: BundleServer,
    start_opa: Callable[..., OpaSidecar],
    start_pdp: Any,
) -> Polled:
    nginx.publish(build(V1, tmp_path / "first.tar.gz", key, opa_bin), "rego.tar.gz")
    opa = start_opa(bundle=None, config=polling(nginx, key))
    pdp: Pdp = start_pdp(opa.url)
    wait_for(lambda: pdp.health_status() == SERVING, timeout_s=20, what="first bundle loaded")
    return Polled(nginx, opa, pdp, key, opa_bin, tmp_path)


def build(source: Path, out: Path, key: bundles.SigningKey, opa_bin: str, revision: str | None = None) -> Path:
    return bundles.build(source, out, opa_bin=opa_bin, key=key, revision=revision).path


def tamper(bundle: Path, out: Path) -> Path:
    """A copy of a signed bundle with one policy file changed after signing (signature kept)."""
    with tarfile.open(bundle, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name.endswith("data.json") and b"crm.lookup" in data:
                data = data.replace(b'"deny"', b'"allow"')
            elif m.name.endswith(".rego"):
                data += b"\n# changed after signing\n"
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    return out


def polling(nginx: BundleServer, key: bundles.SigningKey) -> dict[str, Any]:
    return bundles.polling_config(resource="rego.tar.gz", url=nginx.url, key=key, min_delay_s=1, max_delay_s=1)


def revision_of(record: str) -> str:
    return str(claims_of(record)["bundles"]["rego"]["revision"])


def test_built_bundle_is_signed_by_the_key_it_names(key: bundles.SigningKey, opa_bin: str, tmp_path: Path) -> None:
    built = bundles.build(BUNDLE, tmp_path / "rego.tar.gz", opa_bin=opa_bin, key=key, revision="r-42")
    assert built.key_id == key.key_id and built.revision == "r-42"
    assert built.signature_digest.startswith("sha256:")
    with tarfile.open(built.path) as tar:
        names = {m.name.lstrip("/") for m in tar.getmembers()}
    assert ".signatures.json" in names and "pdp/decision.rego" in names
    assert not [n for n in names if n.endswith("_test.rego")], "policy tests are not shipped"
    # The CLI does the same, from a key directory made by `pdp policy keygen`.
    env = {**os.environ, "PDP_OPA_BIN": opa_bin}
    keygen = subprocess.run(
        [sys.executable, "-m", "pdp", "policy", "keygen", str(tmp_path / "k")], env=env, capture_output=True, text=True
    )
    assert keygen.returncode == 0, keygen.stderr
    assert (tmp_path / "k" / bundles.PRIVATE_FILE).stat().st_mode & 0o777 == 0o600
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp",
            "policy",
            "build",
            str(V1),
            "--signing-key",
            str(tmp_path / "k"),
            "--out",
            str(tmp_path / "v1.tar.gz"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revision"] == "lifecycle-1"


def test_signed_bundle_is_served_and_named_in_records(
    key: bundles.SigningKey, opa_bin: str, tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Any
) -> None:
    opa = start_opa(bundle=build(BUNDLE, tmp_path / "rego.tar.gz", key, opa_bin, "signed-1"), key=key)
    pdp: Pdp = start_pdp(opa.url)
    wait_for(lambda: pdp.health_status() == SERVING, what="PDP serving the signed bundle")
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert resp.outcome == 1 and not resp.indeterminate  # OUTCOME_ALLOW
    assert list(resp.provenance.bundle_revisions.values()) == ["signed-1"]  # a file bundle is named by its path
    assert [b["revision"] for b in claims_of(resp.record)["bundles"].values()] == ["signed-1"]


def test_a_bundle_verified_by_opas_configuration_names_its_key_in_answers_and_records(
    key: bundles.SigningKey, opa_bin: str, tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Any
) -> None:
    """As pdp dev, compose and the k8s pod run OPA: the key id comes from OPA's configuration."""
    built = bundles.build(BUNDLE, tmp_path / "rego.tar.gz", opa_bin=opa_bin, key=key, revision="signed-2")
    opa = start_opa(bundle=None, config=bundles.serving_config(built, key))
    pdp: Pdp = start_pdp(opa.url)
    wait_for(lambda: pdp.health_status() == SERVING, what="PDP serving the signed bundle")
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert dict(resp.provenance.bundle_revisions) == {"rego": "signed-2"}
    assert dict(resp.provenance.bundle_signing_keys) == {"rego": key.key_id}
    assert claims_of(resp.record)["bundles"] == {"rego": {"revision": "signed-2", "signing_key": key.key_id}}


def test_tampered_or_unsigned_bundle_file_is_never_served(
    key: bundles.SigningKey, opa_bin: str, tmp_path: Path, start_opa: Callable[..., OpaSidecar]
) -> None:
    signed = build(V1, tmp_path / "v1.tar.gz", key, opa_bin)
    with pytest.raises(SidecarError, match="opa exited"):
        start_opa(bundle=tamper(signed, tmp_path / "tampered.tar.gz"), key=key)
    assert "digest mismatch" in (tmp_path / "opa-0.log").read_text()
    unsigned = tmp_path / "unsigned.tar.gz"
    subprocess.run(
        [opa_bin, "build", "-b", ".", "--ignore", "*_test.rego", "-o", str(unsigned)],
        cwd=V1,
        check=True,
        capture_output=True,
    )
    with pytest.raises(SidecarError, match="opa exited"):
        start_opa(bundle=unsigned, key=key)
    assert "bundle missing .signatures.json" in (tmp_path / "opa-1.log").read_text()
    other = bundles.generate(tmp_path / "other-key")
    with pytest.raises(SidecarError, match="opa exited"):
        start_opa(bundle=build(V1, tmp_path / "other.tar.gz", other, opa_bin), key=key)
    assert "invalid ECDSA signature" in (tmp_path / "opa-2.log").read_text(), "signed by another key"


def test_tampered_bundle_on_first_poll_leaves_the_pdp_not_serving(
    key: bundles.SigningKey,
    opa_bin: str,
    tmp_path: Path,
    nginx: BundleServer,
    start_opa: Callable[..., OpaSidecar],
    start_pdp: Any,
) -> None:
    nginx.publish(tamper(build(V1, tmp_path / "v1.tar.gz", key, opa_bin), tmp_path / "t.tar.gz"), "rego.tar.gz")
    opa = start_opa(bundle=None, config=polling(nginx, key))
    watch = BundleWatch(opa_url=opa.url, timeout_s=2)
    wait_for(lambda: bool(watch.check()), timeout_s=20, what="OPA to refuse the first bundle")
    assert "no revision loaded" in watch.detail and "digest mismatch" in watch.detail
    pdp: Pdp = start_pdp(opa.url)
    assert pdp.health_status() == NOT_SERVING
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert resp.indeterminate and resp.error_code == "pdp.policy_undefined"


def test_refused_reload_keeps_the_old_policy_and_is_reported(
    polled: Polled, key: bundles.SigningKey, nginx: BundleServer, caplog: pytest.LogCaptureFixture
) -> None:
    pdp = polled.pdp
    reader = InMemoryMetricReader()
    watch = BundleWatch(opa_url=polled.opa.url, timeout_s=2, meter_provider=MeterProvider(metric_readers=[reader]))
    assert watch.check() == ""
    assert watch.signing_keys == {"rego": key.key_id}
    wait_for(lambda: pdp.health_status("pdp.policy") == SERVING, what="the PDP's policy health")
    first = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    signed_by = {"rego": {"revision": "lifecycle-1", "signing_key": key.key_id}}
    assert claims_of(first.record)["bundles"] == signed_by, "the record names the key that signed its policy"

    polled.publish(V2, tampered=True)
    with caplog.at_level(logging.WARNING, logger="pdp.policy.watch"):
        wait_for(lambda: bool(watch.check()), timeout_s=20, what="OPA to refuse the tampered reload")
    assert "latest load was refused" in watch.detail and "'lifecycle-1'" in watch.detail
    # One line per watcher (the PDP's own and this test's), not one per poll:
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert set(lines) == {watch.detail} and len(lines) <= 2
    failures = [
        p
        for rm in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "pdp.bundle.load_failures"
        for p in m.data.data_points
    ]
    assert failures and failures[0].attributes == {"bundle": "rego", "code": "bundle_error"}
    # The old policy still answers (crm.lookup allowed under lifecycle-1), and the PDP serves it.
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert resp.outcome == 1 and revision_of(resp.record) == "lifecycle-1"
    assert pdp.health_status() == SERVING
    wait_for(lambda: pdp.health_status("pdp.policy") == NOT_SERVING, what="the PDP to report the refused reload")
    # The good revision, published next, is activated and the report clears.
    polled.publish(V2)
    wait_for(lambda: watch.check() == "", timeout_s=20, what="the good v2 to load")
    wait_for(lambda: pdp.health_status("pdp.policy") == SERVING, what="the PDP to see the good v2")
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert resp.outcome == 2 and revision_of(resp.record) == "lifecycle-2"  # OUTCOME_DENY under v2
    # Unchanged since: OPA asks with If-None-Match (the ETag) and nginx answers 304 Not Modified.
    wait_for(lambda: any('" 304 ' in line for line in nginx.requests()), timeout_s=10, what="a 304 to a poll")


def test_reload_under_load_drops_nothing_and_records_the_revision_that_decided(polled: Polled) -> None:
    pdp = polled.pdp

    stop = threading.Event()
    lock = threading.Lock()
    answers: list[tuple[int, int, str]] = []  # (log index, outcome, revision)
    errors: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                r = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
            except grpc.RpcError as e:
                with lock:
                    errors.append(f"{e.code().name}: {e.details()}")
                continue
            with lock:
                if r.indeterminate:
                    errors.append(r.error_code)
                answers.append((r.log_index, r.outcome, revision_of(r.record)))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(answers) >= 50, timeout_s=30, what="load before the switch")
        polled.publish(V2)
        wait_for(lambda: any(rev == "lifecycle-2" for _, _, rev in list(answers)), timeout_s=20, what="the switch")
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 50, timeout_s=30, what="load after the switch")
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert errors == []
    by_revision = {rev: {outcome for _, outcome, r in answers if r == rev} for rev in ("lifecycle-1", "lifecycle-2")}
    assert by_revision == {"lifecycle-1": {1}, "lifecycle-2": {2}}, "each record names the policy that decided it"
    first_v2 = min(i for i, _, rev in answers if rev == "lifecycle-2")
    assert all(i < first_v2 + 4 for i, _, rev in answers if rev == "lifecycle-1"), "the switch happens once"


# --- replay -------------------------------------------------------------------------------------

LOGGED = {  # example → how many times it is decided into the log
    "allow-crm-lookup.json": 3,  # crm.lookup: allow under v1, deny under v2
    "defense-allow-read.json": 2,  # intel.read: deny under v1, allow under v2
    "defense-deny-need-to-know.json": 1,  # intel.read
    "defense-require-approval-two-person.json": 1,  # intel.purge: deny under both
    "healthcare-allow-treatment.json": 2,  # ehr.read: allow under both
    "fintech-allow-transfer.json": 1,  # payments.transfer: require_approval under both
}


@dataclasses.dataclass
class Logged:
    pdp: Pdp
    home: Path


@pytest.fixture
def logged(start_opa: Callable[..., OpaSidecar], start_pdp: Any, tmp_path: Path) -> Logged:
    """A decision log written by a real PDP in front of OPA serving lifecycle-v1."""
    home = tmp_path / "pdp"
    pdp: Pdp = start_pdp(start_opa(V1).url, key_dir=home / "keys", log_dir=home / "log")
    for name, n in LOGGED.items():
        for _ in range(n):
            assert not pdp.stub.Decide(load_request(name), timeout=5).indeterminate
    return Logged(pdp, home)


def run_replay(logged: Logged, *args: str, opa_bin: str) -> subprocess.CompletedProcess[str]:
    log_dir, jwks = logged.home / "log", logged.home / "keys" / "jwks.json"
    return subprocess.run(
        [sys.executable, "-m", "pdp", "replay", str(log_dir), "--jwks", str(jwks), *args],
        env={**os.environ, "PDP_OPA_BIN": opa_bin},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_replay_reports_exactly_the_changes_of_a_known_edit(
    logged: Logged, opa_bin: str, tmp_path: Path, key: bundles.SigningKey
) -> None:
    candidate = build(V2, tmp_path / "v2.tar.gz", key, opa_bin)
    out = tmp_path / "impact"
    done = run_replay(
        logged,
        "--bundle",
        str(candidate),
        "--verification-key",
        str(key.public),
        "--out",
        str(out),
        "--progress",
        "always",
        opa_bin=opa_bin,
    )
    assert done.returncode == 1, done.stderr  # a deny->allow change crosses the default gate
    assert "100%" in done.stderr and f"{sum(LOGGED.values())}/{sum(LOGGED.values())}" in done.stderr
    assert "GATE FAILED: 3 deny->allow change(s)" in done.stdout
    report = json.loads((out / "impact.json").read_text())
    impact = report["impact"]
    assert impact["replayed"] == sum(LOGGED.values())
    assert impact["by_kind"] == {"allow->deny": 3, "deny->allow": 3}
    assert impact["by_agent"] == {"intel-analyst": {"deny->allow": 3}, "support-bot": {"allow->deny": 3}}
    assert impact["by_tool"] == {"crm.lookup": {"allow->deny": 3}, "intel.read": {"deny->allow": 3}}
    assert impact["reasons_added"] == {"tool.allow": 3, "tool.deny": 3}
    example = impact["examples"]["allow->deny"][0]
    assert example["before"] == {"outcome": "allow", "reasons": ["tool.allow"]}
    assert example["after"] == {"outcome": "deny", "reasons": ["tool.deny"]}
    html = (out / "impact.html").read_text()
    assert "<h1>Policy replay" in html and "deny-&gt;allow" in html and "support-bot" in html


def test_replay_of_an_identical_bundle_changes_nothing_and_passes(logged: Logged, opa_bin: str) -> None:
    done = run_replay(logged, "--bundle", str(V1), "--max-changes", "0", opa_bin=opa_bin)
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"replayed {sum(LOGGED.values())} decisions" in done.stdout and "0 changed" in done.stdout
    assert "gate passed" in done.stdout


def test_replay_thresholds_are_configurable(logged: Logged, opa_bin: str) -> None:
    lenient = run_replay(logged, "--bundle", str(V2), "--fail-on", "none", "--max-changes", "6", opa_bin=opa_bin)
    assert lenient.returncode == 0, lenient.stdout
    strict = run_replay(logged, "--bundle", str(V2), "--fail-on", "allow->deny", opa_bin=opa_bin)
    assert strict.returncode == 1 and "3 allow->deny" in strict.stdout


def test_replay_refuses_a_tampered_log(logged: Logged, opa_bin: str, tmp_path: Path) -> None:
    logged.pdp.server.stop(1)
    segment = sorted((logged.home / "log").glob("segment-*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[200] ^= 0x01
    segment.chmod(0o644)
    segment.write_bytes(bytes(data))
    done = run_replay(logged, "--bundle", str(V2), "--out", str(tmp_path / "o"), opa_bin=opa_bin)
    assert done.returncode == 3 and "does not verify, nothing replayed" in done.stderr
    assert not (tmp_path / "o").exists()


def test_replay_refuses_a_candidate_not_signed_by_the_key(
    logged: Logged, opa_bin: str, tmp_path: Path, key: bundles.SigningKey
) -> None:
    other = bundles.generate(tmp_path / "other")
    candidate = build(V2, tmp_path / "v2.tar.gz", other, opa_bin)
    done = run_replay(logged, "--bundle", str(candidate), "--verification-key", str(key.public), opa_bin=opa_bin)
    assert done.returncode == 2 and "does not load" in done.stderr


def test_policy_ci_runs_every_check_and_the_replay_gate(logged: Logged, opa_bin: str, tmp_path: Path) -> None:
    regal = ROOT / ".bin" / "regal"
    env = {**os.environ, "PDP_OPA_BIN": opa_bin}
    base = [sys.executable, "-m", "pdp", "policy", "ci", "--regal", str(regal)]
    gate = ["--replay-log", str(logged.home / "log"), "--jwks", str(logged.home / "keys" / "jwks.json")]
    same = subprocess.run([*base, str(V1), *gate], env=env, capture_output=True, text=True, cwd=ROOT)
    assert same.returncode == 0, same.stdout + same.stderr
    assert [line.split()[0] for line in same.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")] == ["ok"] * 5
    edited = subprocess.run([*base, str(V2), *gate], env=env, capture_output=True, text=True, cwd=ROOT)
    assert edited.returncode == 1, edited.stdout
    assert "FAIL replay gate" in edited.stdout and "3 deny->allow" in edited.stdout
    unformatted = tmp_path / "bundle"
    shutil.copytree(V1, unformatted)
    (unformatted / "pdp" / "extra.rego").write_text("package pdp\nx:=1\n")
    bad = subprocess.run([*base, str(unformatted)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and bad.stdout.startswith("FAIL opa fmt") and "extra.rego" in bad.stdout


def test_replay_separates_what_masking_changes(
    start_opa: Callable[..., OpaSidecar], start_pdp: Any, opa_bin: str, tmp_path: Path
) -> None:
    # The project's bundle masks patient ids and account numbers in the records; replaying the
    # same bundle on those masked inputs decides some of them otherwise: the mask's doing.
    home = tmp_path / "pdp"
    pdp: Pdp = start_pdp(start_opa(BUNDLE).url, key_dir=home / "keys", log_dir=home / "log")
    for name in ["healthcare-allow-treatment.json", "fintech-allow-transfer.json", "allow-crm-lookup.json"]:
        assert pdp.stub.Decide(load_request(name), timeout=5).outcome == 1
    out = tmp_path / "impact"
    same = ["--bundle", str(BUNDLE), "--max-changes", "0"]
    strict = run_replay(Logged(pdp, home), *same, "--out", str(out), opa_bin=opa_bin)
    impact = json.loads((out / "impact.json").read_text())["impact"]
    assert strict.returncode == 1 and impact["changed"] >= 1
    assert impact["changes_on_masked_input"] == impact["changed"], "nothing but masking changed"
    assert impact["by_kind_on_masked_input"] == impact["by_kind"]
    assert "deny->allow" not in impact["by_kind"], "a mask never grants more here"
    lenient = run_replay(Logged(pdp, home), *same, "--exclude-masked", opa_bin=opa_bin)
    assert lenient.returncode == 0, lenient.stdout
