"""``compose.yaml`` from the fleet's description: the services, and the NATS,
Postgres and MinIO they use, each credential a compose secret file."""

from __future__ import annotations

from typing import Any

from thaw.fleet import description as d
from thaw.fleet.yamlfile import render

HEADER = """
The whole platform with real NATS, MinIO and Postgres:
  deploy/make-secrets.sh && docker compose up --build
Rendered from thaw.fleet.description by `python -m thaw.fleet .`: edit that,
not this file. make-secrets generates deploy/secrets/* once (never committed):
the Postgres password, MinIO's keys and the blob URL that names them, the
secrets key ring, the nats-server's configuration and one NATS credential per
role (thaw_core.nats_auth); each service mounts only its own credential at
/run/secrets/nats-creds. No credential is in the environment: each setting
names its file. `THAW_NATS_AUTH_DIR=deploy/secrets/nats thaw nats-client
create ...` adds an invoke client; restart nats to apply it.
Then point the SDK at it: THAW_GATEWAY_URL=http://localhost:28080 and the
token printed by `docker compose logs gateway`.
"""

# Where the services find their dependencies: this file's own containers.
ENDPOINTS = {
    "THAW_NATS_URL": f"nats://nats:{d.NATS_PORT}",
    "THAW_NATS_REPLICAS": "1",  # one nats-server
    "THAW_DATABASE_URL": "postgresql://thaw@postgres:5432/thaw",
    # No wildcard DNS here: web endpoints answer under /web/<app>/<label>/.
    "THAW_WEB_DOMAIN": "",
}
NODE_VALUES = {"THAW_NODE_ID": "agent-1"}


def _secret_refs(secrets: tuple[d.Secret, ...]) -> list[dict[str, str]]:
    return [{"source": s.name, "target": s.target} for s in secrets]


def _infra() -> dict[str, Any]:
    return {
        "nats": {
            "image": "nats:2.10",
            "command": ["-c", d.NATS_SERVER_CONF.path, "-js", "-sd", "/data"],
            "secrets": _secret_refs((d.NATS_SERVER_CONF,)),
            "volumes": ["nats:/data"],
        },
        "postgres": {
            "image": "postgres:15",
            "environment": {
                "POSTGRES_USER": "thaw",
                "POSTGRES_DB": "thaw",
                "POSTGRES_PASSWORD_FILE": d.POSTGRES_PASSWORD.path,
                # SCRAM on the socket too: the image trusts local connections otherwise.
                "POSTGRES_INITDB_ARGS": "--auth-local=scram-sha-256 --auth-host=scram-sha-256",
            },
            "secrets": _secret_refs((d.POSTGRES_PASSWORD,)),
            "volumes": ["postgres:/var/lib/postgresql/data"],
            "healthcheck": {
                "test": ["CMD", "pg_isready", "-U", "thaw"], "interval": "2s", "retries": 30,
            },
        },
        "minio": {
            "image": "minio/minio",
            "command": ["server", "/data"],
            "environment": {
                "MINIO_ROOT_USER_FILE": d.S3_ACCESS_KEY.path,
                "MINIO_ROOT_PASSWORD_FILE": d.S3_SECRET_KEY.path,
            },
            "secrets": _secret_refs((d.S3_ACCESS_KEY, d.S3_SECRET_KEY)),
            "volumes": ["minio:/data"],
        },
    }


def _service(svc: d.Service) -> dict[str, Any]:
    env = {**d.COMMON_ENV, **{k: ENDPOINTS[k] for k in d.ENDPOINT_ENV}, **svc.env}
    env |= {k: ENDPOINTS[k] for k in svc.endpoint_env}
    env |= {k: NODE_VALUES[k] for k in svc.node_env}
    out: dict[str, Any] = {
        "build": {"context": ".", "dockerfile": d.DOCKERFILE},
        "image": d.IMAGE,
        "restart": "unless-stopped",
        "command": ["python", "-m", svc.module],
        "environment": env,
        "secrets": _secret_refs(svc.secrets),
        "depends_on": {
            "nats": {"condition": "service_started"},
            "postgres": {"condition": "service_healthy"},
            "minio": {"condition": "service_started"},
        },
        "volumes": [f"{svc.name}-state:{d.STATE_DIR}"],
    }
    if svc.port:
        out["ports"] = [f"{svc.port}:{svc.port}"]
    if svc.privileged:
        out["privileged"] = True
    if svc.host_state:
        out["pid"] = "host"  # as the Kubernetes DaemonSet's hostPID
    return out


def all_secrets() -> list[d.Secret]:
    seen: dict[str, d.Secret] = {}
    for svc in d.FLEET:
        for s in svc.secrets:
            seen.setdefault(s.name, s)
    for s in (d.NATS_SERVER_CONF, d.S3_ACCESS_KEY, d.S3_SECRET_KEY):
        seen.setdefault(s.name, s)
    return sorted(seen.values(), key=lambda s: s.name)


def document() -> dict[str, Any]:
    services = _infra() | {svc.name: _service(svc) for svc in d.FLEET}
    volumes = ["nats", "postgres", "minio", *(f"{svc.name}-state" for svc in d.FLEET)]
    return {
        "services": services,
        "volumes": {v: {} for v in volumes},
        "secrets": {s.name: {"file": s.file} for s in all_secrets()},
    }


def render_compose() -> str:
    return render([document()], HEADER)
