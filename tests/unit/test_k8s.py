"""deploy/k8s: valid Kubernetes objects (kubeconform, strict, offline) that keep OPA locked in its pod.

kubeconform is built from its pinned Go module into .bin/ (`make tools`); the Kubernetes JSON schemas
come from the kubernetes-validate package (a dev dependency), rewritten by tools/kubeconform/schemas.py
so that every reference resolves on disk; cert-manager's Certificate is checked against the schema in
tools/kubeconform/crds/. Only those locations are given to kubeconform, so it never downloads a schema,
and a kind without a schema is an error, not a skip. The other tests read the YAML and hold it to the
properties the deployment promises, and to the PDP's own Settings: every directory the PDP writes is on
a volume (the root filesystem is read-only), and replicas share one PostgreSQL state store. OPA serves
only a signed bundle: the release steps README.md documents (`pdp policy build --opa-config`) are run
here, and the pod, run as local processes, loads what they make, records the key that signed it and
refuses a bundle changed after signing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp import authz, config, keys
from pdp.errors import ConfigError
from pdp.policy import bundles
from pdp.sidecar import free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import ROOT, LocalContainers, claims_of, dev_issuers, load_request, wait_for

KUBECONFORM = ROOT / ".bin" / "kubeconform"
K8S = ROOT / "deploy" / "k8s"
CRDS = ROOT / "tools" / "kubeconform" / "crds"
# The oldest Kubernetes with native sidecar containers on by default and GA (1.33), and the newest
# the pinned kubernetes-validate ships.
VERSIONS = ("1.33.0", "1.37.0")
KINDS = {"Namespace", "ServiceAccount", "Service", "StatefulSet", "NetworkPolicy", "PodDisruptionBudget", "Certificate"}
SOCKET_DIR = "/run/opa"
SOCKET_URL = f"unix://{SOCKET_DIR}/opa.sock"
PDP_UID = 10001
# What the Secret pdp-state holds in a cluster (a PostgreSQL shared by the replicas), for parsing.
STATE_URL = "postgresql://pdp@postgres.db.svc:5432/pdp"
# Files the kubelet mounts from Secrets and ConfigMaps: they exist only in the pod.
POD_FILES = ("PDP_TLS_CERT_FILE", "PDP_TLS_KEY_FILE", "PDP_TLS_CLIENT_CA_FILE", "PDP_ROLES_FILE")
# OPA's configuration and the signed bundle: the projected volume opa-policy, from these ConfigMaps.
OPA_DIR = "/etc/opa"
OPA_FILES = {"opa.yaml": ("pdp-opa-config", "opa.yaml"), "rego.tar.gz": ("pdp-policy-bundle", "rego.tar.gz")}
CONFIGMAP_LIMIT = 1 << 20  # bytes in one ConfigMap (binaryData is base64 in it)


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not KUBECONFORM.exists():
        pytest.fail("no .bin/kubeconform: run `make tools`")
    out = tmp_path_factory.mktemp("k8s-schemas")
    script = ROOT / "tools" / "kubeconform" / "schemas.py"
    done = subprocess.run([sys.executable, str(script), str(out), *VERSIONS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def kubeconform(schemas: Path, version: str, *paths: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Runs kubeconform -strict; returns its exit status, the result of every resource, and stderr."""
    kind_file = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    done = subprocess.run(
        [
            str(KUBECONFORM),
            "-strict",
            "-verbose",
            "-output",
            "json",
            "-kubernetes-version",
            version,
            "-schema-location",
            f"{schemas}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/{kind_file}",
            "-schema-location",
            f"{CRDS}/{kind_file}",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)["resources"]
    return done.returncode, results, done.stderr


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The variables read from a Secret: name -> {name: the Secret, key: its key}."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def mount_of(container: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The volume mount a path is on (the deepest one holding it), or None: the root filesystem."""
    holding = [m for m in mounts(container).values() if path.is_relative_to(m["mountPath"])]
    return max(holding, key=lambda m: len(m["mountPath"]), default=None)


def pod_settings(pdp: dict[str, Any]) -> config.Settings:
    """The PDP's Settings from the manifest's variables, parsed by the PDP itself: $(POD_NAME) as the
    kubelet expands it for pdp-0, PDP_STATE_URL as the Secret gives it, and without the files that exist
    only in the pod (checked against their mounts instead)."""
    variables = {k: v.replace("$(POD_NAME)", "pdp-0") for k, v in env(pdp).items() if k not in POD_FILES}
    assert set(secret_refs(pdp)) <= {"PDP_STATE_URL"}, "a variable from a Secret this test cannot stand in for"
    variables |= {k: STATE_URL for k in secret_refs(pdp)}
    return config.Settings.from_env(variables)


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_kubeconform_accepts_every_manifest_strictly(schemas: Path, version: str) -> None:
    code, results, stderr = kubeconform(schemas, version, K8S)
    assert code == 0, results or stderr
    assert {r["kind"] for r in results} == KINDS
    assert {r["status"] for r in results} == {"statusValid"}


PLANTED = {
    # An unknown field deep in the pod (strict mode: additional properties are errors).
    "statefulset.yaml": (
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(runAsRoot=False),
        "/spec/template/spec/containers/0/securityContext",
    ),
    # A misspelt field of the CRD, against the schema the project provides for it.
    "certificate.yaml": (lambda d: d["spec"].update(secretNme="pdp-tls"), "/spec"),
    # A wrong type.
    "service.yaml": (lambda d: d["spec"]["ports"][0].update(port="50051"), "/spec/ports/0/port"),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_kubeconform_rejects_a_planted_mistake(schemas: Path, tmp_path: Path, name: str) -> None:
    change, where = PLANTED[name]
    doc = yaml.safe_load((K8S / name).read_text())
    change(doc)
    (tmp_path / name).write_text(yaml.safe_dump(doc))
    code, results, _ = kubeconform(schemas, VERSIONS[-1], tmp_path)
    assert code == 1
    (result,) = results
    assert result["status"] == "statusInvalid" and where in result["msg"], result


def test_kubeconform_refuses_a_kind_it_has_no_schema_for(schemas: Path, tmp_path: Path) -> None:
    (tmp_path / "issuer.yaml").write_text(
        "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: pdp-ca}\nspec: {ca: {secretName: ca}}\n"
    )
    code, results, _ = kubeconform(schemas, VERSIONS[-1], tmp_path)
    assert code == 1 and results[0]["status"] == "statusError" and "could not find schema" in results[0]["msg"]


def test_pdp_and_opa_share_one_pod_and_opa_is_a_native_sidecar(pod: dict[str, Any]) -> None:
    assert [c["name"] for c in pod["containers"]] == ["pdp"]
    opa = containers(pod)["opa"]
    assert opa["restartPolicy"] == "Always"  # started before the PDP, stopped after it
    pin = re.search(r"open-policy-agent/opa v(\S+)", (ROOT / "tools/opa/go.mod").read_text())
    assert pin and opa["image"] == f"openpolicyagent/opa:{pin.group(1)}"


def test_opa_is_reachable_only_through_the_pods_unix_socket(docs: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    by_name = containers(pod)
    opa, pdp = by_name["opa"], by_name["pdp"]
    args = opa["args"]
    assert [a for a in args if a.startswith(("--addr", "-a"))] == [f"--addr={SOCKET_URL}"]
    assert "--unix-socket-perm=600" in args and not any(a.startswith("--diagnostic-addr") for a in args)
    assert "ports" not in opa
    assert env(pdp)["PDP_OPA_URL"] == SOCKET_URL
    # The socket's directory is an in-memory volume that only the PDP and OPA mount.
    assert volumes(pod)["opa-socket"]["emptyDir"]["medium"] == "Memory"
    assert {n for n, c in by_name.items() if "opa-socket" in mounts(c)} == {"pdp", "opa"}
    assert {mounts(c)["opa-socket"]["mountPath"] for c in (opa, pdp)} == {SOCKET_DIR}
    # No Service offers OPA: the only port in the namespace is the PDP's gRPC port.
    services = [d for d in docs if d["kind"] == "Service"]
    assert [p["port"] for s in services for p in s["spec"]["ports"]] == [50051]


def test_every_container_is_non_root_read_only_without_privileges(
    docs: list[dict[str, Any]], pod: dict[str, Any]
) -> None:
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["runAsUser"] == ctx["runAsGroup"] == ctx["fsGroup"] == PDP_UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod["automountServiceAccountToken"] and not pod.get("hostNetwork")
    for name, c in containers(pod).items():
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == PDP_UID, name
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged"), name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"]), name
    # The API server enforces the same: Pod Security "restricted" on the namespace.
    assert one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_keys_come_from_a_secret_no_one_else_can_read(pod: dict[str, Any]) -> None:
    vols, by_name = volumes(pod), containers(pod)
    for volume in ("signing-key", "tls"):
        mode = vols[volume]["secret"]["defaultMode"]
        assert mode in (0o400, 0o440), f"{volume}: {oct(mode)}"
        assert all(mounts(c)[volume]["readOnly"] for c in by_name.values() if volume in mounts(c))
    assert vols["signing-key"]["secret"]["secretName"] == "pdp-signing-key"
    # The PDP refuses a private key its group may read: an init container hands it a 0600 copy in memory.
    keys = by_name["keys"]
    assert "install -m 0600 /etc/pdp/signing/* /run/pdp/keys/" in keys["command"][-1]
    assert mounts(keys)["signing-key"]["mountPath"] == "/etc/pdp/signing"
    assert vols["keys"]["emptyDir"]["medium"] == "Memory"
    pdp = by_name["pdp"]
    assert mounts(pdp)["keys"]["mountPath"] == env(pdp)["PDP_KEY_DIR"] and mounts(pdp)["keys"]["readOnly"]
    assert "signing-key" not in mounts(pdp)


def test_each_replica_owns_its_log_under_its_own_origin(docs: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    sts = one(docs, "StatefulSet")["spec"]
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "log" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    pdp = containers(pod)["pdp"]
    assert mounts(pdp)["log"]["mountPath"] == env(pdp)["PDP_LOG_DIR"]
    # PDP_LOG_ORIGIN names the pod (downward API), declared before the variable that expands it.
    names = [e["name"] for e in pdp["env"]]
    (pod_name,) = [e for e in pdp["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "$(POD_NAME)" in env(pdp)["PDP_LOG_ORIGIN"] and names.index("POD_NAME") < names.index("PDP_LOG_ORIGIN")


def test_mtls_material_comes_from_the_cert_manager_certificate(docs: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    cert = one(docs, "Certificate")["spec"]
    assert volumes(pod)["tls"]["secret"]["secretName"] == cert["secretName"]
    assert "server auth" in cert["usages"] and "pdp.pdp.svc" in cert["dnsNames"]
    pdp = containers(pod)["pdp"]
    tls_dir = mounts(pdp)["tls"]["mountPath"]
    files = {k: env(pdp)[k] for k in ("PDP_TLS_CERT_FILE", "PDP_TLS_KEY_FILE", "PDP_TLS_CLIENT_CA_FILE")}
    assert files == {
        "PDP_TLS_CERT_FILE": f"{tls_dir}/tls.crt",
        "PDP_TLS_KEY_FILE": f"{tls_dir}/tls.key",
        "PDP_TLS_CLIENT_CA_FILE": f"{tls_dir}/ca.crt",  # client certificates are required: mTLS
    }


def test_probes_are_grpc_health_on_the_health_only_port(pod: dict[str, Any]) -> None:
    pdp = containers(pod)["pdp"]
    ports = {p["name"]: p for p in pdp["ports"]}
    assert set(ports) == {"grpc", "health"}
    assert env(pdp)["PDP_LISTEN"] == f"0.0.0.0:{ports['grpc']['containerPort']}"
    # Plaintext grpc.health.v1 only: the kubelet's probe cannot present a client certificate.
    assert env(pdp)["PDP_HEALTH_LISTEN"] == f"0.0.0.0:{ports['health']['containerPort']}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = {k for k in pdp[probe] if k in ("grpc", "httpGet", "tcpSocket", "exec")}
        assert handler == {"grpc"} and pdp[probe]["grpc"] == {"port": ports["health"]["containerPort"]}, probe


def test_network_policy_admits_peps_and_operators_only_to_grpc(docs: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    labels = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    peps, operators = policy["ingress"]
    (peer,) = peps["from"]  # one peer with both selectors: the PEP label AND the PEP namespace
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "agents"}
    assert peer["podSelector"]["matchLabels"] == {"pdp.local/role": "pep"}
    # Approvers and admins: labelled pods in the PDP's own namespace (a podSelector alone), no other peer.
    assert operators["from"] == [{"podSelector": {"matchLabels": {"pdp.local/role": "operator"}}}]
    for rule in (peps, operators):
        assert rule["ports"] == [{"protocol": "TCP", "port": 50051}]
    # ApprovalService and AdminService are served on PDP_LISTEN with Decide: no HTTP face, no console port.
    settings = pod_settings(containers(pod)["pdp"])
    assert settings.listen == "0.0.0.0:50051" and settings.http_listen == settings.console_listen == ""


def test_egress_reaches_only_postgresql_and_the_cluster_dns(docs: list[dict[str, Any]]) -> None:
    egress = one(docs, "NetworkPolicy")["spec"]["egress"]
    ports = {(p["protocol"], p["port"]) for rule in egress for p in rule["ports"]}
    assert ports == {("TCP", 5432), ("UDP", 53), ("TCP", 53)}
    (postgres,) = [r for r in egress if {"protocol": "TCP", "port": 5432} in r["ports"]]
    assert postgres["ports"] == [{"protocol": "TCP", "port": 5432}]
    # The database's name is resolved by the cluster DNS, and by nothing else.
    (dns,) = [r for r in egress if r is not postgres]
    (peer,) = dns["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_every_directory_the_pdp_writes_is_on_a_writable_volume(
    docs: list[dict[str, Any]], pod: dict[str, Any]
) -> None:
    pdp = containers(pod)["pdp"]
    vols = volumes(pod)
    claims = {c["metadata"]["name"] for c in one(docs, "StatefulSet")["spec"]["volumeClaimTemplates"]}
    writable = claims | {name for name, v in vols.items() if "emptyDir" in v}
    settings = pod_settings(pdp)
    # Every directory setting the PDP has is below (a new one must be placed on a volume here too).
    fields = {f.name for f in dataclasses.fields(config.Settings) if f.name.endswith("_dir")}
    assert fields == {"key_dir", "log_dir", "state_dir"}
    assert settings.log_dir is not None and settings.key_dir is not None
    # The decision log (segments, tree, index, checkpoints) and any temporary file (tempfile's TMPDIR).
    written = {"PDP_LOG_DIR": settings.log_dir, "TMPDIR": Path(env(pdp).get("TMPDIR", "/tmp"))}
    if isinstance(settings.state_location, Path):  # the SQLite store; a URL writes nothing here
        written["PDP_STATE_DIR"] = settings.state_location
    for what, path in written.items():
        mount = mount_of(pdp, path)
        assert mount is not None, f"{what}={path} is on the read-only root filesystem"
        assert mount["name"] in writable and not mount.get("readOnly"), f"{what}={path}: {mount}"
    # PDP_KEY_DIR is read-only: the PDP makes id-secret there only when it is missing, and the
    # Secret the keys init container copies from carries it (`pdp keys generate --dir`).
    key_mount = mount_of(pdp, settings.key_dir)
    assert key_mount is not None and key_mount["name"] == "keys"
    # The embedded default (SQLite beside the log directory) would be on the root filesystem: the
    # manifest must name its state store.
    default = config.Settings(log_dir=settings.log_dir).state_location
    assert isinstance(default, Path) and mount_of(pdp, default) is None
    assert settings.state_url or settings.state_dir is not None
    # The files read from Secrets and ConfigMaps are on their (read-only) volumes.
    for name in POD_FILES:
        mount = mount_of(pdp, Path(env(pdp)[name]))
        assert mount is not None and mount["readOnly"], name
        assert {"secret", "configMap"} & set(vols[mount["name"]]), name


def test_replicas_share_one_postgresql_named_by_a_secret(docs: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    replicas = one(docs, "StatefulSet")["spec"]["replicas"]
    pdp = containers(pod)["pdp"]
    if replicas > 1:  # budgets, suspensions and approvals must be one for every replica
        assert secret_refs(pdp).get("PDP_STATE_URL") == {"name": "pdp-state", "key": "url"}
        assert "PDP_STATE_URL" not in {e["name"] for e in pdp["env"] if "value" in e}  # never in the manifest
    settings = pod_settings(pdp)
    assert settings.state_location == STATE_URL  # the URL wins over any directory
    readme = (K8S / "README.md").read_text()
    assert "kubectl -n pdp create secret generic pdp-state" in readme and "--from-literal=url='postgresql://" in readme


def test_roles_come_from_the_configmap_and_the_documented_file_loads(pod: dict[str, Any], tmp_path: Path) -> None:
    pdp, vols = containers(pod)["pdp"], volumes(pod)
    roles = mounts(pdp)["roles"]
    assert vols["roles"]["configMap"]["name"] == "pdp-roles" and roles["readOnly"]
    assert env(pdp)["PDP_ROLES_FILE"] == f"{roles['mountPath']}/roles.json"
    assert vols["roles"]["configMap"]["defaultMode"] in (0o400, 0o440, 0o444)
    # The roles.json README.md tells you to create the ConfigMap from is one the PDP accepts, with every role.
    readme = (K8S / "README.md").read_text()
    example = re.search(r"cat > roles.json <<'JSON'\n(.*?)\nJSON\n", readme, re.DOTALL)
    assert example and "kubectl -n pdp create configmap pdp-roles --from-file=roles.json" in readme
    (tmp_path / "roles.json").write_text(example.group(1))
    role_map = authz.RoleMap.load(tmp_path / "roles.json")
    assert {r for roles in [*role_map.by_uri.values(), *role_map.by_subject.values()] for r in roles} == authz.ALL_ROLES


def test_a_disruption_takes_at_most_one_replica(docs: list[dict[str, Any]]) -> None:
    sts, pdb = one(docs, "StatefulSet")["spec"], one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["selector"] == sts["selector"] and pdb["maxUnavailable"] == 1 < sts["replicas"]


def test_settings_are_those_the_pdp_reads(pod: dict[str, Any]) -> None:
    pdp = containers(pod)["pdp"]
    variables = env(pdp)
    documented = set(re.findall(r"`(PDP_[A-Z_]+)`", (ROOT / "docs" / "configuration.md").read_text()))
    assert {k for k in variables if k.startswith("PDP_")} <= documented
    # The files exist only in the pod; everything else is validated by the PDP's own parser.
    settings = pod_settings(pdp)
    assert settings.log_origin == "pdp.local/decisions/pdp-0"
    assert settings.decision_path == config.Settings().decision_path
    assert pod["terminationGracePeriodSeconds"] > settings.grace_s


def manifest_revision() -> str:
    revision: str = json.loads((ROOT / "rego" / ".manifest").read_text())["revision"]
    return revision


@dataclasses.dataclass(frozen=True)
class Release:
    """A policy release made by README.md's steps: its signing key (which stays where it was made)
    and, for each ConfigMap, the files `kubectl create configmap --from-file` puts in it, by key."""

    key: bundles.SigningKey
    configmaps: dict[str, dict[str, Path]]


def release_steps() -> list[str]:
    """The commands of README.md's release block, comments left out."""
    readme = (K8S / "README.md").read_text()
    block = re.search(r"```sh\n(# Once, where policy releases are signed.*?)```", readme, re.DOTALL)
    assert block, "README.md: no release steps"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def make_release(workspace: Path, opa_bin: str) -> Release:
    """Runs README.md's release steps in ``workspace``, the policy repository's CI (its bundle
    directory ``rego`` is the project's): ``pdp`` as this checkout's CLI, the ``jq`` assignment as jq
    does it, and each ``kubectl create configmap`` as the files it would put in the ConfigMap."""
    workspace.mkdir()
    (workspace / "rego").symlink_to(ROOT / "rego")
    environ = {**os.environ, "PDP_OPA_BIN": opa_bin}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    configmaps: dict[str, dict[str, Path]] = {}
    for step in release_steps():
        argv = shlex.split(step)
        if argv[0] == "pdp":
            done = subprocess.run(
                [sys.executable, "-m", "pdp", *argv[1:]], cwd=workspace, env=environ, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{step}: {done.stderr}"
        elif argv[0] == "jq":
            expr, source, redirect, target = argv[1:]
            assignment = re.fullmatch(r'\.bundles\.rego\.resource = "([^"]+)"', expr)
            assert assignment and redirect == ">", step
            config = json.loads((workspace / source).read_text())
            config["bundles"]["rego"]["resource"] = assignment.group(1)
            (workspace / target).write_text(json.dumps(config, indent=2) + "\n")
        else:
            create = re.fullmatch(r"kubectl -n pdp create configmap (\S+) --from-file=(\S+)", step)
            assert create, f"README.md: an unexpected release step: {step}"
            source_file = workspace / create.group(2)
            configmaps.setdefault(create.group(1), {})[source_file.name] = source_file
    return Release(key=bundles.SigningKey.load(workspace / "keys" / "bundle"), configmaps=configmaps)


def test_opa_is_given_no_directory_only_its_configuration_file(pod: dict[str, Any]) -> None:
    opa = containers(pod)["opa"]
    args = opa["args"]
    # `run`, then flags only: no bundle or directory on the command line (it would be served unsigned,
    # and the PDP would see no bundle status and record no key id). The bundle comes from the configuration.
    assert args[0] == "run" and all(a.startswith("--") for a in args[1:])
    assert not any(a in ("-b", "--bundle") or a.startswith(("--bundle=", "--ignore")) for a in args)
    (config_file,) = [a.removeprefix("--config-file=") for a in args if a.startswith("--config-file")]
    assert config_file == f"{OPA_DIR}/opa.yaml"
    # Read-only, from the projected volume of the two ConfigMaps: each file from its own ConfigMap.
    mount = mount_of(opa, Path(config_file))
    assert mount is not None and mount["name"] == "opa-policy" and mount["readOnly"]
    assert mount["mountPath"] == OPA_DIR
    projected = volumes(pod)["opa-policy"]["projected"]
    files = {
        item["path"]: (source["configMap"]["name"], item["key"])
        for source in projected["sources"]
        for item in source["configMap"]["items"]
    }
    assert files == OPA_FILES
    assert {n for n, c in containers(pod).items() if "opa-policy" in mounts(c)} == {"opa"}
    # OPA mounts no Secret: no private key of any kind reaches it.
    vols = volumes(pod)
    assert not [name for name in mounts(opa) if "secret" in vols[name]]


def test_the_documented_release_is_a_signed_bundle_and_the_config_that_verifies_it(
    pod: dict[str, Any], tmp_path: Path, opa_bin: str
) -> None:
    release = make_release(tmp_path / "ci", opa_bin)
    # The ConfigMaps are created from the files the pod projects, and from nothing else.
    made = {name: set(files) for name, files in release.configmaps.items()}
    expected: dict[str, set[str]] = {}
    for configmap, key in OPA_FILES.values():
        expected.setdefault(configmap, set()).add(key)
    assert made == expected
    config = json.loads(release.configmaps["pdp-opa-config"]["opa.yaml"].read_text())
    # What `pdp policy build --opa-config` writes (bundles.polling_config), loading the pod's copy of the bundle.
    bundle = f"{OPA_DIR}/rego.tar.gz"
    assert config == bundles.polling_config(resource=f"file://{bundle}", key=release.key, min_delay_s=1, max_delay_s=1)
    assert config["bundles"]["rego"]["signing"] == {"keyid": release.key.key_id}
    assert config["keys"][release.key.key_id]["algorithm"] == bundles.SIGNING_ALG == "ES256"
    assert config["status"] == {"prometheus": True}  # /v1/status: what the PDP reads
    assert "services" not in config  # nothing fetched: the NetworkPolicy's egress stays PostgreSQL and DNS
    # The tarball: signed by that key (its id in the signature), with the manifest's revision, no policy tests.
    tarball = release.configmaps["pdp-policy-bundle"]["rego.tar.gz"]
    built = bundles.inspect(tarball)
    assert built.key_id == release.key.key_id and built.revision == manifest_revision()
    with tarfile.open(tarball) as tar:
        assert not any(n.endswith("_test.rego") for n in tar.getnames()), "policy tests are not policy"
    # Public material only in the cluster: the private key stays where the release was signed.
    assert release.key.private is not None and release.key.private.stat().st_mode & 0o777 == 0o600
    private = release.key.private.read_bytes()
    for files in release.configmaps.values():
        for path in files.values():
            data = path.read_bytes()
            assert b"PRIVATE" not in data and private not in data, path
    # A ConfigMap holds at most 1 MiB, binaryData base64-encoded: far from it.
    assert 4 * tarball.stat().st_size / 3 < CONFIGMAP_LIMIT / 4


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on, from its socket descriptors and the kernel's socket tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class PodOnThisHost(LocalContainers):
    """The pod's containers run as local processes, with the manifest's own commands and variables and
    its mount paths mapped under a temporary directory (TLS off: the kubelet would mount its Secret)."""

    def __init__(self, pod: dict[str, Any], home: Path, opa_bin: str) -> None:
        super().__init__(
            home,
            {
                SOCKET_DIR: home / "run-opa",
                "/run/pdp/keys": home / "keys",
                "/var/lib/pdp/log": home / "log",
                "/etc/pdp/signing": home / "signing",
                "/etc/pdp/roles": home / "roles",
                OPA_DIR: home / "opa-policy",
            },
        )
        self.containers = containers(pod)
        for directory in ("run-opa", "keys", "opa-policy", "roles"):
            (home / directory).mkdir(mode=0o700)
        self.opa_bin = opa_bin

    def run_init(self, name: str) -> None:
        done = subprocess.run([self.local(a) for a in self.containers[name]["command"]], capture_output=True)
        assert done.returncode == 0, done.stderr

    def project_policy(self, pod: dict[str, Any], release: Release) -> Path:
        """Fills the volume opa-policy as the kubelet does from the release's ConfigMaps; returns
        its directory. The configuration's file:// resource names the pod's path: mapped here too."""
        target = self.home / "opa-policy"
        for source in volumes(pod)["opa-policy"]["projected"]["sources"]:
            for item in source["configMap"]["items"]:
                shutil.copyfile(release.configmaps[source["configMap"]["name"]][item["key"]], target / item["path"])
        config_file = Path(self.local(f"{OPA_DIR}/opa.yaml"))
        config = json.loads(config_file.read_text())
        config["bundles"]["rego"]["resource"] = self.local(config["bundles"]["rego"]["resource"])
        config_file.write_text(json.dumps(config))
        return target

    def start_opa(self) -> tuple[subprocess.Popen[bytes], str]:
        """Starts OPA with the manifest's arguments; returns it and its URL once its socket is there."""
        opa = self.start("opa", [self.opa_bin, *map(self.local, self.containers["opa"]["args"])])
        socket = self.home / "run-opa" / "opa.sock"
        wait_for(socket.is_socket, timeout_s=20, what="OPA's socket")
        return opa, self.local(env(self.containers["pdp"])["PDP_OPA_URL"])

    def start_pdp(self, postgres_url: str) -> tuple[subprocess.Popen[bytes], int, int]:
        """Starts the PDP with the manifest's variables (TLS off, local ports); returns it, its gRPC
        port and its health port."""
        port, health_port = free_port(), free_port()
        pdp = self.containers["pdp"]
        variables = {k: self.local(v) for k, v in env(pdp).items() if not k.startswith("PDP_TLS_")}
        variables |= {"POD_NAME": "pdp-0", "PDP_LISTEN": f"127.0.0.1:{port}", "PDP_HEALTH_INTERVAL_MS": "100"}
        variables |= {"PDP_HEALTH_LISTEN": f"127.0.0.1:{health_port}"}
        variables["PDP_TRUST_FILE"] = str(dev_issuers() / "trust.json")  # the issuers load_request's tokens come from
        variables["PDP_LOG_ORIGIN"] = variables["PDP_LOG_ORIGIN"].replace("$(POD_NAME)", "pdp-0")
        assert set(secret_refs(pdp)) == {"PDP_STATE_URL"}
        variables["PDP_STATE_URL"] = postgres_url  # the Secret pdp-state: a real PostgreSQL
        process = self.start("pdp", [sys.executable, "-m", "pdp", *pdp["args"]], {**os.environ, **variables})
        return process, port, health_port

    def health(self, pdp: subprocess.Popen[bytes], channel: grpc.Channel, service: str = "") -> int | None:
        """The PDP's grpc.health.v1 status of ``service``; None while it does not answer."""
        assert pdp.poll() is None, (self.home / "pdp.out").read_text()
        try:
            status: int = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                .status
            )
        except grpc.RpcError:
            return None
        return status


@pytest.fixture
def pod_here(pod: dict[str, Any], tmp_path: Path, opa_bin: str) -> Iterator[PodOnThisHost]:
    here = PodOnThisHost(pod, tmp_path, opa_bin)
    # The ConfigMap pdp-roles: without mTLS here every caller is anonymous, and a PEP.
    (tmp_path / "roles" / "roles.json").write_text(json.dumps({"roles": {}, "anonymous": ["pep"]}))
    yield here
    here.stop()


def prepare_keys(here: PodOnThisHost) -> None:
    # The Secret as the kubelet mounts it: 0440. The PDP refuses that; the `keys` init container's copy works.
    keys.ensure(here.home / "signing")
    for f in (here.home / "signing").iterdir():
        f.chmod(0o440)
    with pytest.raises(ConfigError, match="readable by others"):
        keys.KeyRing.load(here.home / "signing")
    here.run_init("keys")
    keys.KeyRing.load(here.home / "keys")


@pytest.mark.integration
def test_the_pod_as_written_decides_over_the_socket_and_logs_under_its_pod_name(
    pod: dict[str, Any], pod_here: PodOnThisHost, postgres_url: str
) -> None:
    here, home = pod_here, pod_here.home
    prepare_keys(here)
    # The policy release as README.md makes it, in the ConfigMaps the pod projects into OPA's /etc/opa.
    release = make_release(home / "ci", here.opa_bin)
    here.project_policy(pod, release)

    opa, url = here.start_opa()
    assert (home / "run-opa" / "opa.sock").stat().st_mode & 0o777 == 0o600
    assert listening_tcp_ports(opa.pid) == set()  # OPA listens on no TCP port at all

    def active() -> bool:
        status = bundles.read_status(url, timeout_s=2) or {}
        return "rego" in status and status["rego"].active_revision == manifest_revision()

    wait_for(active, timeout_s=20, what="OPA to activate the signed bundle")
    # What the PDP reads from OPA (BundleWatch): the bundle's status, and the key that verified it.
    assert bundles.read_signing_keys(url, timeout_s=2) == {"rego": release.key.key_id}

    pdp, port, health_port = here.start_pdp(postgres_url)
    serving = health_pb2.HealthCheckResponse.SERVING
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.insecure_channel(f"127.0.0.1:{health_port}") as probes,  # where the kubelet asks
    ):
        wait_for(
            lambda: here.health(pdp, probes) == serving,
            timeout_s=30,
            what="the PDP's gRPC health SERVING (what the probes ask)",
        )
        wait_for(lambda: here.health(pdp, probes, "pdp.policy") == serving, timeout_s=10, what="bundle health")
        with pytest.raises(grpc.RpcError) as e:  # the health port serves health and nothing else
            pb_grpc.DecisionServiceStub(probes).Decide(load_request("fintech-allow-transfer.json"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        stub = pb_grpc.DecisionServiceStub(channel)
        allowed = stub.Decide(load_request("fintech-allow-transfer.json"), timeout=5)
        assert allowed.outcome == pb.OUTCOME_ALLOW
        assert stub.Decide(load_request("fintech-deny-sanctioned.json"), timeout=5).outcome == pb.OUTCOME_DENY
        # The record names the revision of the policy that decided and the key that signed it.
        signed = {"revision": manifest_revision(), "signing_key": release.key.key_id}
        assert claims_of(allowed.record)["bundles"] == {"rego": signed}

    def checkpointed_under_pod_name() -> bool:
        files = [f for f in (home / "log").rglob("*") if f.is_file()]
        return any(b"pdp.local/decisions/pdp-0\n" in f.read_bytes() for f in files)

    wait_for(checkpointed_under_pod_name, timeout_s=10, what="a checkpoint naming the pod's own log")
    # The state store is the shared PostgreSQL (its schema made at start), not a file in the pod.
    with psycopg.connect(postgres_url) as db:
        tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'pdp_%'")}
    assert {"pdp_escalations", "pdp_reservations", "pdp_suspensions", "pdp_single_use"} <= tables
    assert not (home / "state").exists()


def tamper(tarball: Path, name: str = "pdp/decision.rego") -> None:
    """Changes one policy file of a signed bundle, keeping its signature: what someone who can
    write the ConfigMap, but has not the private key, can do."""
    with tarfile.open(tarball) as tar:
        members = [(m, f.read() if (f := tar.extractfile(m)) else b"") for m in tar.getmembers()]
    assert name in {m.name.lstrip("/") for m, _ in members}
    with tarfile.open(tarball, "w:gz") as tar:
        for member, content in members:
            data = content + b"\n# changed after signing\n" if member.name.lstrip("/") == name else content
            member.size = len(data) if member.isfile() else member.size
            tar.addfile(member, io.BytesIO(data))


@pytest.mark.integration
def test_the_pod_as_written_refuses_a_tampered_bundle_and_never_becomes_ready(
    pod: dict[str, Any], pod_here: PodOnThisHost, postgres_url: str
) -> None:
    here, home = pod_here, pod_here.home
    prepare_keys(here)
    release = make_release(home / "ci", here.opa_bin)
    tamper(here.project_policy(pod, release) / "rego.tar.gz")
    _, url = here.start_opa()

    def refused() -> bool:
        status = bundles.read_status(url, timeout_s=2) or {}
        return "rego" in status and bool(status["rego"].error)

    wait_for(refused, timeout_s=20, what="OPA to refuse the tampered bundle")
    state = (bundles.read_status(url, timeout_s=2) or {})["rego"]
    assert state.active_revision == "" and "pdp/decision.rego: digest mismatch" in state.error, state

    # Without a policy the PDP does not serve: the kubelet's probes fail and the pod is never ready.
    pdp, port, health_port = here.start_pdp(postgres_url)
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.insecure_channel(f"127.0.0.1:{health_port}") as probes,
    ):
        wait_for(lambda: b"not serving" in (home / "pdp.out").read_bytes(), timeout_s=30, what="the PDP's check")
        assert here.health(pdp, probes) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert here.health(pdp, probes, "pdp.policy") == health_pb2.HealthCheckResponse.NOT_SERVING
        # And a call that reaches it anyway is denied, the tampered policy never consulted.
        resp = pb_grpc.DecisionServiceStub(channel).Decide(load_request("fintech-allow-transfer.json"), timeout=5)
        assert resp.outcome == pb.OUTCOME_DENY and resp.indeterminate
