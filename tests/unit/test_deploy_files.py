"""compose.yaml and deploy/k8s/ as an operator would take them: what the
fleet's description renders, valid against the Compose specification and the
Kubernetes schemas (offline: both are vendored or bundled), in step with each
other, every credential a secret file that deploy/make-secrets.sh makes, and
the image's Dockerfile naming what exists."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from thaw.fleet import description
from thaw.fleet.__main__ import COMPOSE_FILE, K8S_FILE, main, rendered
from thaw.fleet.k8s import documents
from thaw_core import secrets_grant
from thaw_gateway.secretbox import load_box

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "data" / "schemas"
INFRA = {"nats", "postgres", "minio"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / COMPOSE_FILE).read_text())


def _k8s() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / K8S_FILE).read_text()))


def _workloads() -> dict[str, dict[str, Any]]:
    """Each thaw service's pod spec, by service name."""
    return {
        doc["metadata"]["name"].removeprefix("thaw-"): doc["spec"]["template"]["spec"]
        for doc in _k8s()
        if doc["kind"] in ("Deployment", "DaemonSet")
    }


def test_committed_files_are_what_the_description_renders(capsys):
    assert main([str(ROOT), "--check"]) == 0, capsys.readouterr().err
    for rel, text in rendered().items():
        assert (ROOT / rel).read_text() == text


def test_check_names_a_stale_file(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0
    (tmp_path / COMPOSE_FILE).write_text((tmp_path / COMPOSE_FILE).read_text() + "x-edited: 1\n")
    assert main([str(tmp_path), "--check"]) == 1
    assert COMPOSE_FILE in capsys.readouterr().err


def test_manifests_validate_against_the_kubernetes_schemas():
    version = kubernetes_validate.latest_version()
    docs = _k8s()
    assert docs, "deploy/k8s/thaw.yaml has no resources"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kubernetes_validation_refuses_a_broken_manifest():
    version = kubernetes_validate.latest_version()
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicee"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, version, strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, version, strict=True)


def _compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def test_compose_validates_against_the_compose_specification():
    errors = [e.message for e in _compose_validator().iter_errors(_compose())]
    assert errors == []


def test_the_compose_validation_refuses_a_broken_file():
    doc = _compose()
    doc["services"]["gateway"]["privilegd"] = True
    assert list(_compose_validator().iter_errors(doc))


def test_compose_and_kubernetes_run_the_same_services_with_the_same_settings():
    compose = {n: s for n, s in _compose()["services"].items() if n not in INFRA}
    pods = _workloads()
    assert set(compose) == set(pods) == {s.name for s in description.FLEET}
    for name, svc in compose.items():
        container = pods[name]["containers"][0]
        assert svc["command"] == container["command"], name
        assert set(svc["environment"]) == {e["name"] for e in container["env"]}, name
        # The same secret files at the same paths.
        compose_secrets = {s["target"] for s in svc["secrets"]}
        volume = next(v for v in pods[name]["volumes"] if v["name"] == "secrets")
        k8s_secrets = {
            item["path"] for src in volume["projected"]["sources"]
            for item in src["secret"]["items"]
        }
        assert compose_secrets == k8s_secrets, name
        assert bool(svc.get("privileged")) == bool(
            container.get("securityContext", {}).get("privileged")
        ), name


def test_every_thaw_service_is_deployed():
    """Each service the embedded stack runs, and the agent, and nothing else."""
    from thaw.stack.parts import AGENT, SERVICES

    assert {s.name for s in description.FLEET} == {*SERVICES, AGENT}


def test_the_agent_runs_on_every_node_privileged_with_its_host_paths():
    agent = next(d for d in _k8s() if d["metadata"]["name"] == "thaw-agent")
    assert agent["kind"] == "DaemonSet"
    pod = agent["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["privileged"] is True
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/thaw", "/sys/fs/cgroup"} <= host_paths <= mounts
    node_id = next(e for e in container["env"] if e["name"] == "THAW_NODE_ID")
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_gateway_is_reached_through_a_service_and_an_ingress_with_web_host_names():
    docs = _k8s()
    service = next(d for d in docs if d["kind"] == "Service")
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert service["spec"]["selector"] == _k8s_labels("gateway")
    hosts = [r["host"] for r in ingress["spec"]["rules"]]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    domain = config["data"]["web-domain"]
    assert hosts == [domain, f"*.{domain}"]
    for rule in ingress["spec"]["rules"]:
        assert rule["http"]["paths"][0]["backend"]["service"]["name"] == service["metadata"]["name"]
    # Rendering for another domain moves both.
    other = documents("apps.corp.test")
    assert [r["host"] for r in next(d for d in other if d["kind"] == "Ingress")["spec"]["rules"]] \
        == ["apps.corp.test", "*.apps.corp.test"]


def _k8s_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": f"thaw-{name}", "app.kubernetes.io/part-of": "thaw"}


_SECRETISH = re.compile(r"PASSWORD|SECRET|KEY|CREDS|TOKEN")


def _plain_values(env: dict[str, str]) -> None:
    for name, value in env.items():
        value = str(value)
        assert urlsplit(value).password is None, f"{name} carries a password"
        if _SECRETISH.search(name) and not name.startswith("POSTGRES_INITDB"):
            assert value.startswith("/run/secrets/"), f"{name} is not a secret file: {value}"


def test_no_credential_is_written_in_the_files():
    for svc in _compose()["services"].values():
        _plain_values(svc.get("environment", {}))
    for doc in _k8s():
        assert doc["kind"] != "Secret", "Secrets are made from files, never committed"
        if doc["kind"] == "ConfigMap":
            _plain_values(doc["data"])
    for pod in _workloads().values():
        _plain_values({e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e})
    # Every Secret a pod reads is one deploy/k8s/README.md says how to make.
    readme = (ROOT / "deploy" / "k8s" / "README.md").read_text()
    for pod in _workloads().values():
        volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
        for src in volume["projected"]["sources"]:
            assert f"secret generic {src['secret']['name']} " in readme, src["secret"]["name"]
    assert f"secret generic {description.NATS_SERVER_CONF.k8s_secret} " in readme


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory) -> Path:
    """deploy/make-secrets.sh run in a copy of deploy/, with this venv."""
    root = tmp_path_factory.mktemp("repo")
    (root / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "make-secrets.sh", root / "deploy")
    (root / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run(["sh", str(root / "deploy" / "make-secrets.sh")], check=True,
                   capture_output=True, timeout=120)
    return root


def test_make_secrets_makes_every_secret_compose_mounts(made_secrets):
    for name, secret in _compose()["secrets"].items():
        path = made_secrets / secret["file"]
        assert path.is_file() and path.stat().st_size > 0, f"{name}: {secret['file']} not made"
    assert (made_secrets / "deploy" / "secrets").stat().st_mode & 0o077 == 0
    # The blob URL names MinIO's own keys.
    url = urlsplit((made_secrets / description.BLOB_URL.file).read_text())
    assert url.scheme == "s3"
    assert url.username == (made_secrets / description.S3_ACCESS_KEY.file).read_text()
    assert url.password == (made_secrets / description.S3_SECRET_KEY.file).read_text()
    # The key ring is one AES-256 key the gateway accepts.
    key_file = made_secrets / description.SECRETS_KEY.file
    box = load_box(made_secrets, {"THAW_SECRETS_KEY_FILE": str(key_file)})
    sealed = box.seal(b"value", b"scope/name")
    assert box.open(sealed, b"scope/name") == b"value"
    # The grant key is one the scheduler and the gateway load.
    grant_key_file = made_secrets / description.SECRETS_GRANT_KEY.file
    env = {secrets_grant.KEY_FILE_ENV: str(grant_key_file)}
    assert len(secrets_grant.load_key(made_secrets, env)) == secrets_grant.KEY_BYTES
    # A second run keeps what the first made.
    before = (made_secrets / description.POSTGRES_PASSWORD.file).read_text()
    subprocess.run(["sh", str(made_secrets / "deploy" / "make-secrets.sh")], check=True,
                   capture_output=True, timeout=120)
    assert (made_secrets / description.POSTGRES_PASSWORD.file).read_text() == before


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict):
        return [prefix]
    out = []
    for key, value in tree.items():
        # merge/patch take anything; a key ending in $include is the chart's directive.
        if key in ("merge", "patch") or str(key).endswith("$include"):
            out.append((*prefix, key))
        else:
            out += _paths(value, (*prefix, key))
    return out


def _has(tree: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def test_nats_values_are_the_charts_own_keys_for_a_three_server_jetstream_cluster():
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "nats-values.yaml").read_text())
    chart = yaml.safe_load((SCHEMAS / "nats-chart-values.yaml").read_text())
    for path in _paths(values):
        keep = path[:-1] if str(path[-1]).endswith("$include") else path
        assert _has(chart, keep), f"the NATS chart has no value {'.'.join(map(str, path))}"
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    # The services make their streams with as many replicas as the chart runs servers.
    config = next(d for d in _k8s() if d["kind"] == "ConfigMap")
    assert config["data"]["nats-replicas"] == "3"
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["monitor"]["enabled"] is False
    # The included authorization block is the thaw-nats-auth Secret's server.conf.
    include = values["config"]["merge"]["00$include"]
    mount = next(p["value"] for p in values["container"]["patch"]
                 if p["path"] == "/volumeMounts/-")
    volume = next(p["value"] for p in values["podTemplate"]["patch"]
                  if p["path"] == "/spec/volumes/-")
    assert os.path.normpath(os.path.join("/etc/nats-config", include)) == \
        f"{mount['mountPath']}/{description.NATS_SERVER_CONF.k8s_key}"
    assert volume["name"] == mount["name"]
    assert volume["secret"]["secretName"] == description.NATS_SERVER_CONF.k8s_secret


def test_the_dockerfile_names_what_exists():
    text = (ROOT / description.DOCKERFILE).read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such path"
    for script in re.findall(r"bash (deploy/\S+\.sh)", text):
        assert (ROOT / script).is_file(), script
    # The agent needs runc (CRIU comes from install-criu.sh).
    assert re.search(r"apt-get install[^\n]*\brunc\b", text)
    assert "install-criu.sh" in text
    for svc in description.FLEET:
        assert importlib.util.find_spec(svc.module) is not None, svc.module
    compose_build = {s["build"]["dockerfile"] for s in _compose()["services"].values()
                     if "build" in s}
    assert compose_build == {description.DOCKERFILE}
