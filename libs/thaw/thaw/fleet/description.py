"""What a fleet runs, said once for compose.yaml and for Kubernetes.

Every thaw service is one process of the same image (``python -m thaw_<name>``)
that logs in to NATS as its own role (``thaw_core.permissions``). Its
settings are plain environment variables; what is secret (the Postgres
password, the blob store's URL with its S3 keys, the NATS credential, the
secrets key ring, the secrets grant key) is only ever a file under ``/run/secrets`` that a setting
names: a compose secret or a Kubernetes Secret, never a value in these files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thaw_core import secrets_grant
from thaw_core.config import BLOB_URL_FILE_ENV, NATS_CREDS_ENV

from thaw.stack.parts import AGENT, SERVICES

IMAGE = "thaw:dev"
DOCKERFILE = "deploy/images/Dockerfile"
SECRETS_DIR = "/run/secrets"
STATE_DIR = "/var/lib/thaw"
GATEWAY_PORT = 28080
NATS_PORT = 4222


@dataclass(frozen=True)
class Secret:
    """One secret file: where ``deploy/make-secrets.sh`` writes it, the
    Kubernetes Secret and key that hold it, where a process reads it."""

    name: str  # the compose secret's name
    file: str  # its file, relative to the repository
    k8s_secret: str
    k8s_key: str
    target: str  # its file name under /run/secrets

    @property
    def path(self) -> str:
        return f"{SECRETS_DIR}/{self.target}"


POSTGRES_PASSWORD = Secret(
    "postgres-password", "deploy/secrets/postgres-password",
    "thaw-postgres", "password", "postgres-password",
)
BLOB_URL = Secret("blob-url", "deploy/secrets/blob-url", "thaw-blob-store", "url", "blob-url")
SECRETS_KEY = Secret(
    "secrets-key", "deploy/secrets/secrets.key", "thaw-secrets-key", "secrets.key", "secrets-key"
)
# The key the scheduler signs secrets grants with and the gateway checks them
# with (thaw_core.secrets_grant): the two alone read it.
SECRETS_GRANT_KEY = Secret(
    "secrets-grant-key", "deploy/secrets/secrets-grant.key", "thaw-secrets-grant-key",
    "secrets-grant.key", "secrets-grant-key",
)
# The nats-server's authorization block (public keys and grants; python -m
# thaw_core.nats_auth): compose mounts it into its nats, the NATS Helm chart
# includes it (deploy/k8s/nats-values.yaml).
NATS_SERVER_CONF = Secret(
    "nats-server-conf", "deploy/secrets/nats/server.conf", "thaw-nats-auth", "server.conf",
    "nats-server-conf",
)


# MinIO's root user, which thaw's blob URL names too (compose only: on
# Kubernetes the S3 server is the operator's).
S3_ACCESS_KEY = Secret("s3-access-key", "deploy/secrets/s3-access-key", "", "", "s3-access-key")
S3_SECRET_KEY = Secret("s3-secret-key", "deploy/secrets/s3-secret-key", "", "", "s3-secret-key")


def nats_creds(role: str) -> Secret:
    """A role's NATS credential: every process reads its own at the same path."""
    return Secret(
        f"nats-{role}", f"deploy/secrets/nats/users/{role}.json",
        "thaw-nats-creds", f"{role}.json", "nats-creds",
    )


# Settings every service has, the same everywhere.
COMMON_ENV: dict[str, str] = {
    "THAW_STATE_DIR": STATE_DIR,
    NATS_CREDS_ENV: f"{SECRETS_DIR}/nats-creds",
    "THAW_DATABASE_PASSWORD_FILE": POSTGRES_PASSWORD.path,
    BLOB_URL_FILE_ENV: BLOB_URL.path,
    "THAW_LOG_LEVEL": "INFO",
}
# Settings that say where the shared dependencies are: a value per deployment
# (compose: its own containers; Kubernetes: the ConfigMap thaw-endpoints).
ENDPOINT_ENV: dict[str, str] = {
    "THAW_NATS_URL": "nats-url",
    # How many NATS servers keep each stream: 3 on a cluster, 1 on one server.
    "THAW_NATS_REPLICAS": "nats-replicas",
    "THAW_DATABASE_URL": "database-url",
}


@dataclass(frozen=True)
class Service:
    name: str
    # Settings of its own, beyond COMMON_ENV and ENDPOINT_ENV.
    env: dict[str, str] = field(default_factory=dict)
    # Settings whose value is where it runs (Kubernetes: a pod field).
    node_env: tuple[str, ...] = ()
    # Settings from thaw-endpoints (Kubernetes) beyond ENDPOINT_ENV: name -> key.
    endpoint_env: dict[str, str] = field(default_factory=dict)
    extra_secrets: tuple[Secret, ...] = ()
    port: int | None = None
    # Runs containers (runc, CRIU, cgroups) or builds images: root of its host.
    privileged: bool = False
    # Its state dir is the host's (the agent's layer and snapshot caches).
    host_state: bool = False

    @property
    def module(self) -> str:
        return f"thaw_{self.name}"

    @property
    def secrets(self) -> tuple[Secret, ...]:
        return (POSTGRES_PASSWORD, BLOB_URL, nats_creds(self.name), *self.extra_secrets)

    def env_names(self) -> set[str]:
        return {*COMMON_ENV, *ENDPOINT_ENV, *self.env, *self.node_env, *self.endpoint_env}


_BY_NAME: dict[str, Service] = {
    "gateway": Service(
        "gateway",
        env={
            "THAW_GATEWAY_HOST": "0.0.0.0",
            "THAW_GATEWAY_PORT": str(GATEWAY_PORT),
            "THAW_SECRETS_KEY_FILE": SECRETS_KEY.path,
            secrets_grant.KEY_FILE_ENV: SECRETS_GRANT_KEY.path,
        },
        # Web endpoints answer at <app>--<label>.<domain> (wildcard DNS).
        endpoint_env={"THAW_WEB_DOMAIN": "web-domain"},
        extra_secrets=(SECRETS_KEY, SECRETS_GRANT_KEY),
        port=GATEWAY_PORT,
    ),
    "scheduler": Service(
        "scheduler",
        env={secrets_grant.KEY_FILE_ENV: SECRETS_GRANT_KEY.path},
        extra_secrets=(SECRETS_GRANT_KEY,),
    ),
    # buildah inside needs mounts and user namespaces.
    "builder": Service("builder", privileged=True),
    AGENT: Service(AGENT, node_env=("THAW_NODE_ID",), privileged=True, host_state=True),
}

# The platform's services in the embedded stack's start order, then the agent.
FLEET: tuple[Service, ...] = tuple(_BY_NAME.get(n, Service(n)) for n in (*SERVICES, AGENT))


def service(name: str) -> Service:
    return next(s for s in FLEET if s.name == name)
