"""``deploy/k8s/thaw.yaml`` from the fleet's description: a Deployment per
service, the agent as a privileged DaemonSet on every node, the gateway's
Service and Ingress (web endpoints' host names included), and the ConfigMap
that says where NATS and Postgres are. Credentials are only referenced: the
Secrets are made from ``deploy/make-secrets.sh``'s files (deploy/k8s/README.md);
NATS itself comes from the NATS Helm chart (deploy/k8s/nats-values.yaml)."""

from __future__ import annotations

from typing import Any

from thaw.fleet import description as d
from thaw.fleet.yamlfile import render

HEADER = """
thaw on Kubernetes. Rendered from thaw.fleet.description by
`python -m thaw.fleet .` (edit that, not this file): deploy/k8s/README.md says
which Secrets to create first and how NATS is installed.
"""
ENDPOINTS = "thaw-endpoints"
EXAMPLE_DOMAIN = "thaw.example.com"
# Where the services find their dependencies: edit these for your cluster.
ENDPOINT_VALUES = {
    "nats-url": f"nats://nats:{d.NATS_PORT}",  # the NATS chart's Service, release "nats"
    "nats-replicas": "3",  # its three servers (nats-values.yaml)
    "database-url": "postgresql://thaw@postgres:5432/thaw",
}
NODE_FIELDS = {"THAW_NODE_ID": "spec.nodeName"}
PART_OF = "thaw"


def _labels(svc: d.Service) -> dict[str, str]:
    return {"app.kubernetes.io/name": f"thaw-{svc.name}", "app.kubernetes.io/part-of": PART_OF}


def _env(svc: d.Service) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in {**d.COMMON_ENV, **svc.env}.items()
    ]
    env += [
        {"name": k, "valueFrom": {"configMapKeyRef": {"name": ENDPOINTS, "key": key}}}
        for k, key in {**d.ENDPOINT_ENV, **svc.endpoint_env}.items()
    ]
    env += [
        {"name": k, "valueFrom": {"fieldRef": {"fieldPath": NODE_FIELDS[k]}}}
        for k in svc.node_env
    ]
    return env


def _secrets_volume(svc: d.Service) -> dict[str, Any]:
    """Every secret of the service as one read-only directory, /run/secrets."""
    sources = [
        {"secret": {"name": s.k8s_secret, "items": [{"key": s.k8s_key, "path": s.target}]}}
        for s in svc.secrets
    ]
    return {"name": "secrets", "projected": {"sources": sources, "defaultMode": 0o400}}


def _state_volume(svc: d.Service) -> dict[str, Any]:
    if svc.host_state:
        # Layer and snapshot caches, containers' state: kept across restarts.
        return {"name": "state", "hostPath": {"path": d.STATE_DIR, "type": "DirectoryOrCreate"}}
    return {"name": "state", "emptyDir": {}}


def _pod(svc: d.Service) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": svc.name,
        "image": d.IMAGE,
        "command": ["python", "-m", svc.module],
        "env": _env(svc),
        "volumeMounts": [
            {"name": "secrets", "mountPath": d.SECRETS_DIR, "readOnly": True},
            {"name": "state", "mountPath": d.STATE_DIR},
        ],
    }
    volumes = [_secrets_volume(svc), _state_volume(svc)]
    if svc.port:
        container["ports"] = [{"name": "http", "containerPort": svc.port}]
        container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}}
    if svc.privileged:
        container["securityContext"] = {"privileged": True}
    spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    if svc.host_state:
        # runc and CRIU (in the image) run the node's containers in its cgroups.
        container["volumeMounts"].append({"name": "cgroup", "mountPath": "/sys/fs/cgroup"})
        volumes.append(
            {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}}
        )
        spec["hostPID"] = True
    return {"metadata": {"labels": _labels(svc)}, "spec": spec}


def _workload(svc: d.Service) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": _labels(svc)}, "template": _pod(svc)}
    if svc.host_state:
        kind = "DaemonSet"  # one agent per node: each node is a thaw node
    else:
        kind = "Deployment"
        spec = {"replicas": 1, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": f"thaw-{svc.name}", "labels": _labels(svc)},
        "spec": spec,
    }


def _gateway_front(svc: d.Service, web_domain: str) -> list[dict[str, Any]]:
    name = f"thaw-{svc.name}"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(svc)},
        "spec": {
            "selector": _labels(svc),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    backend = {"service": {"name": name, "port": {"name": "http"}}}
    # The API and dashboard on the domain itself; web endpoints on
    # <app>--<label>.<domain> (wildcard DNS to the ingress).
    rules = [
        {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
        for host in (web_domain, f"*.{web_domain}")
    ]
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "labels": _labels(svc)},
        "spec": {"rules": rules},
    }
    return [service, ingress]


def documents(web_domain: str = EXAMPLE_DOMAIN) -> list[dict[str, Any]]:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ENDPOINTS, "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "data": {**ENDPOINT_VALUES, "web-domain": web_domain},
    }
    docs: list[dict[str, Any]] = [config]
    for svc in d.FLEET:
        docs.append(_workload(svc))
        if svc.port:
            docs += _gateway_front(svc, web_domain)
    return docs


def render_k8s(web_domain: str = EXAMPLE_DOMAIN) -> str:
    return render(documents(web_domain), HEADER)
