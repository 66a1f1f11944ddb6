"""docker-compose.yml, loaded by the Compose specification's own loader, agrees with `make run`.

No Docker engine runs here; compose-go (built from its Go module into .bin/) validates the file
and resolves it, and these tests hold it to the Makefile, the OPA pin, the sidecar's flags and
the PDP's documented configuration. OPA serves the policy as `pdp dev` does: a bundle signed with
a policy key, loaded through a configuration that verifies it and turns on OPA's status. The
stack's own commands and variables also run here as local processes (paths mapped under a
temporary directory), from the signing of the bundle to a decision whose record names the key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp import config
from pdp.policy import bundles
from pdp.sidecar import free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import ROOT, LocalContainers, claims_of, dev_issuers, load_request, wait_for

COMPOSE_GO = ROOT / ".bin" / "compose-go"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    if not COMPOSE_GO.exists():
        pytest.fail("no .bin/compose-go: run `make tools`")
    out = subprocess.run(
        [str(COMPOSE_GO), "-format", "json", "docker-compose.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    loaded: dict[str, Any] = json.loads(out.stdout)
    return loaded


def make_default(name: str) -> str:
    m = re.search(rf"^{name}\s*\?=\s*(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, name
    return m.group(1)


def published(service: dict[str, Any]) -> dict[int, str]:
    return {p["target"]: f"{p['host_ip']}:{p['published']}" for p in service["ports"]}


SOCKET_DIR = "/run/opa"
SOCKET_URL = f"unix://{SOCKET_DIR}/opa.sock"
BUNDLE_DIR = "/var/lib/pdp-bundle"  # the signed bundle and OPA's configuration (the opa-bundle volume)


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["source"], v["target"]) for v in service.get("volumes", [])]


def test_the_stack_has_pdp_opa_and_jaeger(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"pdp", "pdp-keys", "policy-bundle", "opa", "jaeger"}
    # The PDP and its key generator share the volume holding keys and the decision log (and the key
    # generator, which runs first, gives the socket volume the image's /run/opa: 0700, the PDP's user).
    s = compose["services"]
    assert mounts(s["pdp"]) == mounts(s["pdp-keys"]) == [("pdp-data", "/var/lib/pdp"), ("opa-socket", SOCKET_DIR)]
    env = compose["services"]["pdp"]["environment"]
    assert env["PDP_KEY_DIR"] == "/var/lib/pdp/keys" and env["PDP_LOG_DIR"] == "/var/lib/pdp/log"


def test_ports_are_those_of_make_run_on_loopback(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert published(s["pdp"]) == {
        50051: f"127.0.0.1:{make_default('PDP_PORT')}",
        8080: f"127.0.0.1:{make_default('HTTP_PORT')}",
    }
    assert "ports" not in s["opa"] and "expose" not in s["opa"]
    assert published(s["jaeger"])[16686] == "127.0.0.1:16686"
    # Nothing anywhere is published beyond the host's loopback.
    assert all(p["host_ip"] == "127.0.0.1" for svc in s.values() for p in svc.get("ports", []))


def test_pdp_serves_its_http_face_as_pdp_dev_does_and_no_console(compose: dict[str, Any]) -> None:
    pdp = compose["services"]["pdp"]
    env = pdp["environment"]
    # The AuthZEN face, inside the container on every interface: published on loopback (above).
    assert env["PDP_HTTP_LISTEN"] == "0.0.0.0:8080"
    settings = config.Settings.from_env(env)
    assert settings.http_listen == env["PDP_HTTP_LISTEN"] and settings.listen_is_public
    assert "INSECURE" in settings.check_exposure()  # allowed (PDP_ALLOW_INSECURE_NON_LOOPBACK), and said
    # The console's only login without certificates is honoured on loopback alone: not in a container.
    assert not any(k.startswith("PDP_CONSOLE_") for k in env)
    assert 8081 not in published(pdp)
    with pytest.raises(config.ConfigError, match="PDP_CONSOLE_LISTEN"):
        config.Settings.from_env(env | {"PDP_CONSOLE_LISTEN": "0.0.0.0:8081", "PDP_CONSOLE_DEV_LOGIN": "1"})


def test_opa_image_is_the_pinned_opa(compose: dict[str, Any]) -> None:
    pin = re.search(r"github.com/open-policy-agent/opa v(\S+)", (ROOT / "tools/opa/go.mod").read_text())
    assert pin
    assert compose["services"]["opa"]["image"] == f"openpolicyagent/opa:{pin.group(1)}"


def test_opa_is_never_given_an_unsigned_directory(compose: dict[str, Any]) -> None:
    s = compose["services"]
    opa = s["opa"]
    cmd = opa["command"]
    # No bundle on the command line (`--bundle rego/` would be unsigned, and the PDP would see no
    # bundle status and no key id): `run`, then flags only; the bundle comes from the configuration.
    assert cmd[0] == "run" and all(c.startswith("--") for c in cmd[1:])
    assert not any(c in ("-b", "--bundle") or c.startswith("--bundle=") for c in cmd)
    (config_file,) = [c.removeprefix("--config-file=") for c in cmd if c.startswith("--config-file")]
    assert config_file == f"{BUNDLE_DIR}/opa.yaml"
    # OPA mounts no host directory (rego/ is not there): its bundle volume read-only, its socket.
    assert all(v["type"] == "volume" for v in opa["volumes"])
    bundle_mount = next(v for v in opa["volumes"] if v["source"] == "opa-bundle")
    assert bundle_mount["target"] == BUNDLE_DIR and bundle_mount["read_only"]
    assert "--set=distributed_tracing.address=jaeger:4317" in cmd
    # policy-bundle writes that volume at the same path (the file:// URL in the configuration is
    # the same in both containers); OPA starts after it has finished, and again when it re-runs.
    assert ("opa-bundle", BUNDLE_DIR) in mounts(s["policy-bundle"])
    assert {name for name, svc in s.items() if "opa-bundle" in dict(mounts(svc))} == {"policy-bundle", "opa"}
    build = s["policy-bundle"]["command"]
    assert build[:2] == ["policy", "build"]
    assert f"--out={BUNDLE_DIR}/rego.tar.gz" in build and f"--opa-config={BUNDLE_DIR}/opa.yaml" in build
    after = opa["depends_on"]["policy-bundle"]
    assert after["condition"] == "service_completed_successfully" and after["restart"]
    # The policy signing key stays in pdp-data, where `pdp dev` puts it (beside PDP_KEY_DIR): never in OPA's volumes.
    (key_dir,) = [c.removeprefix("--signing-key=") for c in build if c.startswith("--signing-key=")]
    assert "--make-key" in build
    assert key_dir == str(Path(s["pdp"]["environment"]["PDP_KEY_DIR"]).parent / "bundle-key")
    assert ("pdp-data", "/var/lib/pdp") in mounts(s["policy-bundle"]) and "pdp-data" not in dict(mounts(opa))
    # The policy is the image's (rego/ at build time).
    assert build[2] == "/opt/pdp/policy"


def test_the_bundler_is_the_pdp_image_with_the_opa_that_serves_the_bundle(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["policy-bundle"]["build"]["target"] == "bundler"
    assert "entrypoint" not in s["policy-bundle"]  # the image's own: `pdp`
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert ("pdp", "bundler") in stages
    # `docker build .` (the PDP image, for compose's pdp and for Kubernetes) is the last stage: no opa in it.
    assert stages[-1] == ("pdp", "")
    (opa_copy,) = re.findall(r"^COPY --from=(\S+) /opa /usr/local/bin/opa$", text, re.M)
    assert opa_copy == s["opa"]["image"]


def test_opa_listens_only_on_a_socket_only_the_pdp_shares(compose: dict[str, Any]) -> None:
    s = compose["services"]
    cmd = s["opa"]["command"]
    # One listening address, a unix socket (OPA's default would be TCP 8181), writable by its owner only.
    assert [c for c in cmd if c.startswith("--addr")] == [f"--addr={SOCKET_URL}"]
    assert "--unix-socket-perm=600" in cmd and not any(c.startswith("--diagnostic-addr") for c in cmd)
    assert s["pdp"]["environment"]["PDP_OPA_URL"] == SOCKET_URL
    sharing = {name for name, svc in s.items() if ("opa-socket", SOCKET_DIR) in mounts(svc)}
    assert sharing == {"pdp", "pdp-keys", "opa"}
    # OPA runs as the PDP image's user, the owner of the socket's 0700 directory.
    assert s["opa"]["user"] == "10001:10001"
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/pdp /run/opa" in (ROOT / "Dockerfile").read_text()
    # The bundle volume starts as the image's directory too (policy-bundle, the PDP's user, writes it first).
    assert f"/run/opa {BUNDLE_DIR}\n" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("service", ["pdp", "policy-bundle", "opa"])
def test_pdp_and_opa_cannot_change_their_image_or_gain_privileges(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    assert svc["read_only"] and svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"]


def test_pdp_variables_are_documented_and_point_at_the_stack(compose: dict[str, Any]) -> None:
    env = compose["services"]["pdp"]["environment"]
    documented = set(re.findall(r"^\| `(PDP_[A-Z_]+)`", (ROOT / "docs" / "configuration.md").read_text(), re.M))
    assert len(documented) > 20
    assert {k for k in env if k.startswith("PDP_")} <= documented
    assert env["PDP_OPA_URL"] == SOCKET_URL
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert config.Settings.from_env(env).decision_path == config.Settings().decision_path


def test_dockerfile_runs_pdp_serve_on_the_published_port() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 50051" in text
    assert 'ENTRYPOINT ["pdp"]' in text and 'CMD ["serve"]' in text
    assert "USER 10001:10001" in text
    # The image carries the policy the compose stack signs for its OPA (policy-bundle).
    assert "COPY rego /opt/pdp/policy" in text


class StackOnThisHost(LocalContainers):
    """The stack's services as local processes, with the file's own commands and variables and its
    container paths mapped under a temporary directory. No Jaeger here: tracing is left out."""

    def __init__(self, compose: dict[str, Any], home: Path, opa_bin: str) -> None:
        super().__init__(
            home,
            {
                "/var/lib/pdp": home / "pdp-data",
                BUNDLE_DIR: home / "opa-bundle",
                SOCKET_DIR: home / "run-opa",
                "/opt/pdp/policy": ROOT / "rego",
            },
        )
        for directory in ("pdp-data", "opa-bundle", "run-opa"):
            (home / directory).mkdir(mode=0o700)
        self.services = compose["services"]
        self.opa_bin = opa_bin

    def environ(self, service: str, **overrides: str) -> dict[str, str]:
        """The service's variables (paths mapped, no OTEL_*) over this process's (no PDP_*, no OTEL_*)."""
        here = {k: v for k, v in os.environ.items() if not k.startswith(("PDP_", "OTEL_"))}
        env = self.services[service].get("environment", {})
        return here | {k: self.local(v) for k, v in env.items() if not k.startswith("OTEL_")} | overrides

    def run(self, service: str, **overrides: str) -> str:
        """Runs a one-shot service (the PDP image's entrypoint is `pdp`) and returns its output."""
        svc = self.services[service]
        assert "entrypoint" not in svc
        argv = [sys.executable, "-m", "pdp", *map(self.local, svc["command"])]
        done = subprocess.run(argv, cwd=ROOT, env=self.environ(service, **overrides), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start_opa(self) -> str:
        """Starts OPA with the file's command; returns its URL once its socket is there."""
        cmd = [self.local(c) for c in self.services["opa"]["command"] if not c.startswith("--set=distributed_tracing")]
        self.start("opa", [self.opa_bin, *cmd])
        socket = self.home / "run-opa" / "opa.sock"
        wait_for(socket.is_socket, timeout_s=20, what="OPA's socket")
        url: str = self.local(self.services["pdp"]["environment"]["PDP_OPA_URL"])
        return url


@pytest.fixture
def stack(compose: dict[str, Any], tmp_path: Path, opa_bin: str) -> Iterator[StackOnThisHost]:
    here = StackOnThisHost(compose, tmp_path, opa_bin)
    yield here
    here.stop()


def manifest_revision() -> str:
    revision: str = json.loads((ROOT / "rego" / ".manifest").read_text())["revision"]
    return revision


def test_policy_bundle_signs_the_policy_and_configures_opa_as_pdp_dev_does(stack: StackOnThisHost) -> None:
    out = stack.home / "opa-bundle"
    first = stack.run("policy-bundle", PDP_OPA_BIN=stack.opa_bin)
    key = bundles.SigningKey.load(stack.home / "pdp-data" / "bundle-key")
    assert key.private is not None and key.private.stat().st_mode & 0o777 == 0o600
    assert key.key_id in first
    # The signed tarball (bundles.build: opa build --signing-key, ES256, the key's id in the header)...
    built = bundles.inspect(out / "rego.tar.gz")
    assert built.key_id == key.key_id and built.revision == manifest_revision()
    with tarfile.open(out / "rego.tar.gz") as tar:
        names = tar.getnames()
    assert "/.signatures.json" in names or ".signatures.json" in names
    assert not any(n.endswith("_test.rego") for n in names), "policy tests are not policy"
    # ...and the configuration `pdp dev` gives its OPA (bundles.dev_bundle): that file, verified with
    # that key, and OPA's status on (what the PDP reads for refused loads and key ids).
    config = json.loads((out / "opa.yaml").read_text())
    expected = bundles.polling_config(resource=(out / "rego.tar.gz").as_uri(), key=key, min_delay_s=1, max_delay_s=1)
    assert config == expected
    assert config["bundles"]["rego"]["signing"] == {"keyid": key.key_id}
    assert config["keys"][key.key_id]["algorithm"] == bundles.SIGNING_ALG == "ES256"
    assert config["status"] == {"prometheus": True}
    # OPA's volume holds the public key only.
    assert sorted(p.name for p in out.iterdir()) == ["opa.yaml", "rego.tar.gz"]
    assert "PRIVATE" not in (out / "opa.yaml").read_text()
    # A later start keeps the key and signs the bundle again.
    stack.run("policy-bundle", PDP_OPA_BIN=stack.opa_bin)
    assert bundles.SigningKey.load(stack.home / "pdp-data" / "bundle-key").key_id == key.key_id
    assert bundles.inspect(out / "rego.tar.gz").key_id == key.key_id


@pytest.mark.integration
def test_opa_as_written_refuses_an_unsigned_bundle(stack: StackOnThisHost) -> None:
    stack.run("policy-bundle", PDP_OPA_BIN=stack.opa_bin)
    unsigned = stack.home / "opa-bundle" / "rego.tar.gz"
    build = [stack.opa_bin, "build", "--bundle", str(ROOT / "rego"), "--ignore", "*_test.rego", "-o", str(unsigned)]
    subprocess.run(build, check=True, capture_output=True)
    url = stack.start_opa()

    def refused() -> bool:
        status = bundles.read_status(url, timeout_s=2) or {}
        return "rego" in status and bool(status["rego"].error)

    wait_for(refused, timeout_s=20, what="OPA to refuse the unsigned bundle")
    state = (bundles.read_status(url, timeout_s=2) or {})["rego"]
    assert state.active_revision == "" and ".signatures.json" in state.error


@pytest.mark.integration
def test_the_stack_as_written_serves_a_signed_bundle_and_records_its_key(stack: StackOnThisHost) -> None:
    stack.run("pdp-keys")
    stack.run("policy-bundle", PDP_OPA_BIN=stack.opa_bin)
    key_id = bundles.SigningKey.load(stack.home / "pdp-data" / "bundle-key").key_id
    url = stack.start_opa()

    def active() -> bool:
        status = bundles.read_status(url, timeout_s=2) or {}
        return "rego" in status and status["rego"].active_revision == manifest_revision()

    wait_for(active, timeout_s=20, what="OPA to activate the signed bundle")
    # What the PDP reads from OPA (BundleWatch): the bundle's status, and the key that verified it.
    assert bundles.read_status(url, timeout_s=2) is not None
    assert bundles.read_signing_keys(url, timeout_s=2) == {"rego": key_id}

    port, http_port = free_port(), free_port()
    variables = {"PDP_LISTEN": f"127.0.0.1:{port}", "PDP_HTTP_LISTEN": f"127.0.0.1:{http_port}"}
    variables |= {"PDP_HEALTH_INTERVAL_MS": "100", "PDP_TRUST_FILE": str(dev_issuers() / "trust.json")}
    pdp = stack.start("pdp", [sys.executable, "-m", "pdp", "serve"], stack.environ("pdp", **variables))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving(service: str) -> bool:
            assert pdp.poll() is None, (stack.home / "pdp.out").read_text()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
            except grpc.RpcError:
                return False
            return bool(status == health_pb2.HealthCheckResponse.SERVING)

        wait_for(lambda: serving(""), timeout_s=30, what="the PDP's gRPC health SERVING")
        wait_for(lambda: serving("pdp.policy"), timeout_s=10, what="the PDP's bundle health SERVING")
        resp = pb_grpc.DecisionServiceStub(channel).Decide(load_request("fintech-allow-transfer.json"), timeout=5)
        assert resp.outcome == pb.OUTCOME_ALLOW
        # The record names the revision and the key that signed its policy, as under `pdp dev`.
        assert claims_of(resp.record)["bundles"] == {"rego": {"revision": manifest_revision(), "signing_key": key_id}}
    # The HTTP (AuthZEN) face answers too.
    r = requests.post(
        f"http://127.0.0.1:{http_port}/access/v1/evaluation",
        json={
            "subject": {"type": "user", "id": "alice@example.com", "properties": {"agent_id": "support-bot"}},
            "action": {"name": "shell.exec"},
            "resource": {"type": "host", "id": "h-1"},
        },
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["decision"] is False
