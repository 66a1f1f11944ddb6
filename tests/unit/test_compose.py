"""docker-compose.yml, loaded by the Compose specification's own loader, agrees with `make run`.

No Docker engine runs here; compose-go (built from its Go module into .bin/) validates the file
and resolves it, and these tests hold it to the Makefile, the OPA pin, the sidecar's flags and
the PDP's documented configuration.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from pdp import config
from tests.helpers import ROOT

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


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["source"], v["target"]) for v in service.get("volumes", [])]


def test_the_stack_has_pdp_opa_and_jaeger(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"pdp", "pdp-keys", "opa", "jaeger"}
    # The PDP and its key generator share the volume holding keys and the decision log (and the key
    # generator, which runs first, gives the socket volume the image's /run/opa: 0700, the PDP's user).
    s = compose["services"]
    assert mounts(s["pdp"]) == mounts(s["pdp-keys"]) == [("pdp-data", "/var/lib/pdp"), ("opa-socket", SOCKET_DIR)]
    env = compose["services"]["pdp"]["environment"]
    assert env["PDP_KEY_DIR"] == "/var/lib/pdp/keys" and env["PDP_LOG_DIR"] == "/var/lib/pdp/log"


def test_ports_are_those_of_make_run_on_loopback(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert published(s["pdp"]) == {50051: f"127.0.0.1:{make_default('PDP_PORT')}"}
    assert "ports" not in s["opa"] and "expose" not in s["opa"]
    assert published(s["jaeger"])[16686] == "127.0.0.1:16686"


def test_opa_image_is_the_pinned_opa(compose: dict[str, Any]) -> None:
    pin = re.search(r"github.com/open-policy-agent/opa v(\S+)", (ROOT / "tools/opa/go.mod").read_text())
    assert pin
    assert compose["services"]["opa"]["image"] == f"openpolicyagent/opa:{pin.group(1)}"


def test_opa_serves_rego_read_only_without_tests_and_traced(compose: dict[str, Any]) -> None:
    opa = compose["services"]["opa"]
    volume, _ = opa["volumes"]
    assert volume["source"] == str(ROOT / "rego") and volume["read_only"]
    cmd = opa["command"]
    assert cmd[cmd.index("--bundle") + 1] == volume["target"]
    # The same flag the sidecar of `make run` uses: policy tests are never served.
    assert "--ignore=*_test.rego" in cmd and '"--ignore", "*_test.rego"' in (ROOT / "pdp/sidecar.py").read_text()
    assert "--set=distributed_tracing.address=jaeger:4317" in cmd


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


@pytest.mark.parametrize("service", ["pdp", "opa"])
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
    # The image carries the policy bundle the Kubernetes pod hands to its OPA sidecar (deploy/k8s).
    assert "COPY rego /opt/pdp/policy" in text
