"""Configuration, read once from ``THAW_*`` environment variables.

Every setting has a default that works for the embedded stack on one machine
(`thaw up`). Default ports are chosen away from the well-known ones (4222 for
NATS, 5432 for Postgres) so that thaw runs beside services a machine already
has.

| variable                 | default                                  |
|--------------------------|------------------------------------------|
| THAW_STATE_DIR           | /var/lib/thaw as root, else $XDG_STATE_HOME/thaw or ~/.local/state/thaw |
| THAW_NATS_URL            | nats://127.0.0.1:24222                   |
| THAW_NATS_PORT           | 24222 (embedded nats-server; a cluster's servers take the ports from here up) |
| THAW_NATS_CLUSTER_SIZE   | 1: how many nats-servers the embedded stack runs (`thaw up --nats-cluster N`) |
| THAW_NATS_CLUSTER_PORT   | 26222: the first of the embedded cluster's route ports |
| THAW_NATS_REPLICAS       | min(cluster size, 3): how many servers keep each stream (3 for an external cluster) |
| THAW_NATS_AUTH_DIR       | $THAW_STATE_DIR/nats-auth: the embedded stack's NATS credentials and server config |
| THAW_NATS_CREDS          | (this process's NATS credential file, ``thaw_core.nats_auth``; `thaw up` gives each process its role's) |
| THAW_DATABASE_URL        | postgresql://thaw@127.0.0.1:25432/thaw   |
| THAW_DATABASE_PASSWORD_FILE | $THAW_STATE_DIR/postgres-password (0600; used when the URL has no password) |
| THAW_POSTGRES_PORT       | 25432 (embedded Postgres)                |
| THAW_BLOB_URL            | file://$THAW_STATE_DIR/blobs             |
|                          | or s3://KEY:SECRET@HOST:PORT/BUCKET?secure=false |
| THAW_BLOB_URL_FILE       | (a file holding THAW_BLOB_URL: the S3 keys from a mounted secret, never the env) |
| THAW_GATEWAY_HOST        | 127.0.0.1                                |
| THAW_GATEWAY_PORT        | 28080                                    |
| THAW_GATEWAY_URL         | http://$THAW_GATEWAY_HOST:$THAW_GATEWAY_PORT |
| THAW_TOKEN               | (client token; `thaw up` prints one)     |
| THAW_OTLP_ENDPOINT       | (unset: console exporter when THAW_TRACE_CONSOLE=1, else none) |
| THAW_TRACE_CONSOLE       | 0                                        |
| THAW_LOG_LEVEL           | INFO                                     |
| THAW_NODE_ID             | the machine's hostname                   |
| THAW_METRICS_HOST        | 127.0.0.1: where a service serves Prometheus /metrics |
| THAW_METRICS_PORT        | 0: a free port per process, named in its health reply (metrics_url) |
| THAW_VOLUME_MAX_BYTES    | 107374182400 (100 GiB): a volume's size limit unless made with another |
| THAW_VOLUME_COMMIT_INTERVAL_S | 5: how often an agent commits a container's volume changes |
| THAW_VOLUME_GC_INTERVAL_S | 3600: how often the volumes service removes chunks no volume names (0: never) |
| THAW_VOLUME_CHUNK_GRACE_S | 3600: how long a chunk no volume names is kept after a commit last named or stored it |
| THAW_PAYLOAD_INLINE_BYTES | 262144 (256 KiB): call arguments, results and map items larger than this go through the blob store, the message names them |
| THAW_PAYLOAD_MAX_BYTES   | 4294967296 (4 GiB): the largest call argument or result (413 / a failed call beyond) |
| THAW_GATEWAY_BODY_BUDGET_BYTES | 268435456 (256 MiB): how much memory the gateway gives request bodies it reads whole (JSON), all requests together; others wait their turn |
| THAW_SECRETS_KEY         | (gateway only) base64 AES-256 keys, comma-separated, first encrypts |
| THAW_SECRETS_KEY_FILE    | $THAW_STATE_DIR/secrets.key (0600, made on first use when unset) |

The secrets key is read by the gateway alone (``thaw_gateway.secretbox``) and
is not part of ``Settings``, so ``to_env`` never hands it to other processes.
At scale, give it as ``THAW_SECRETS_KEY`` or mount
it as a file named by ``THAW_SECRETS_KEY_FILE``, kept apart from Postgres.

The Postgres password is never in the environment either: the embedded stack
generates it into ``$THAW_STATE_DIR/postgres-password`` (0600) and every
process reads it from there (``database_password()``); compose and Kubernetes
mount it from a secret and name it with ``THAW_DATABASE_PASSWORD_FILE``. So
are the S3 keys: the blob store's URL, keys included, is read from the file
named by ``THAW_BLOB_URL_FILE`` when it is set, and handed on to children as
that file's name, never as the URL.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

DATABASE_PASSWORD_FILE_NAME = "postgres-password"


class ConfigError(RuntimeError):
    """A setting that cannot be used as given."""


# The path of a process's NATS credential file.
NATS_CREDS_ENV = "THAW_NATS_CREDS"
NATS_AUTH_DIR_ENV = "THAW_NATS_AUTH_DIR"


# A file holding the blob store's URL (its S3 keys kept out of the environment).
BLOB_URL_FILE_ENV = "THAW_BLOB_URL_FILE"


def _blob_url(e: Mapping[str, str], state_dir: Path) -> str:
    if e.get("THAW_BLOB_URL"):
        return e["THAW_BLOB_URL"]
    if e.get(BLOB_URL_FILE_ENV):
        path = Path(e[BLOB_URL_FILE_ENV]).expanduser()
        try:
            url = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{BLOB_URL_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
        if not url:
            raise ConfigError(f"{BLOB_URL_FILE_ENV}: {path} is empty")
        return url
    return f"file://{state_dir / 'blobs'}"


def split_urls(url: str) -> list[str]:
    """The URLs of a setting that may name several servers, comma-separated
    (a NATS cluster's THAW_NATS_URL, as ``Bus.connect`` takes it)."""
    return [u.strip() for u in url.split(",") if u.strip()]


def stack_nats_auth_dir(state_dir: Path) -> Path:
    """Where the embedded stack keeps its NATS credentials (``thaw_core.nats_auth``)."""
    return state_dir / "nats-auth"


def _default_state_dir() -> Path:
    # Root's home is closed to other users, and the embedded Postgres runs as
    # an unprivileged user that must reach its data dir: use the FHS place.
    if os.geteuid() == 0 and not os.environ.get("XDG_STATE_HOME"):
        return Path("/var/lib/thaw")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "thaw"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    state_dir: Path
    nats_url: str
    nats_port: int
    database_url: str
    postgres_port: int
    blob_url: str
    gateway_host: str
    gateway_port: int
    gateway_url: str
    token: str | None
    otlp_endpoint: str | None
    trace_console: bool
    log_level: str
    node_id: str
    # This process's NATS credential (its role's, see thaw_core.permissions);
    # None: Bus.connect looks at THAW_NATS_CREDS itself.
    nats_creds: Path | None = None
    # Where `thaw up` keeps every role's credential (thaw_core.nats_auth).
    nats_auth_dir: Path = Path()
    # The embedded stack's nats-servers: one, or a cluster on consecutive ports.
    nats_cluster_size: int = 1
    nats_cluster_port: int = 26222
    # How many servers keep each stream and bucket (thaw_core.bus.Streams).
    nats_replicas: int = 1
    volume_max_bytes: int = 100 << 30
    volume_commit_interval_s: float = 5.0
    # A node's volume caches (chunks and whole files), least recently used out past it.
    volume_cache_bytes: int = 20 << 30
    volume_gc_interval_s: float = 3600.0
    volume_chunk_grace_s: float = 3600.0
    metrics_host: str = "127.0.0.1"
    # Web endpoints: host names <app>--<label>.<web_domain> when set (wildcard
    # DNS), the gateway's /web/<app>/<label>/ path otherwise.
    web_domain: str = ""
    web_max_body_bytes: int = 100 << 20
    # How long a request waits for a container to take it before a 503.
    web_start_timeout_s: float = 60.0
    # Larger call arguments, results and map items go through the blob store.
    payload_inline_bytes: int = 256 << 10
    payload_max_bytes: int = 4 << 30
    # The memory the gateway's request bodies read whole may take, together.
    gateway_body_budget_bytes: int = 256 << 20
    # Not handed to child processes (to_env): each process binds its own.
    metrics_port: int = 0
    # Where the Postgres password is kept; "" for the state dir's file.
    database_password_file: str = ""
    # The file blob_url was read from ("" when it came from THAW_BLOB_URL).
    blob_url_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        state_dir = Path(e.get("THAW_STATE_DIR") or _default_state_dir()).expanduser()
        nats_port = int(e.get("THAW_NATS_PORT", "24222"))
        cluster_size = int(e.get("THAW_NATS_CLUSTER_SIZE") or 1)
        if cluster_size < 1:
            raise ConfigError(f"THAW_NATS_CLUSTER_SIZE must be at least 1, not {cluster_size}")
        replicas = int(e.get("THAW_NATS_REPLICAS") or min(cluster_size, 3))
        if not 1 <= replicas <= 5:
            raise ConfigError(f"THAW_NATS_REPLICAS must be 1 to 5 (JetStream's limit), not {replicas}")
        local_urls = ",".join(
            f"nats://127.0.0.1:{nats_port + i}" for i in range(cluster_size)
        )
        pg_port = int(e.get("THAW_POSTGRES_PORT", "25432"))
        gw_host = e.get("THAW_GATEWAY_HOST", "127.0.0.1")
        gw_port = int(e.get("THAW_GATEWAY_PORT", "28080"))
        return cls(
            state_dir=state_dir,
            nats_url=e.get("THAW_NATS_URL", local_urls),
            nats_port=nats_port,
            nats_cluster_size=cluster_size,
            nats_cluster_port=int(e.get("THAW_NATS_CLUSTER_PORT") or 26222),
            nats_replicas=replicas,
            database_url=e.get("THAW_DATABASE_URL", f"postgresql://thaw@127.0.0.1:{pg_port}/thaw"),
            postgres_port=pg_port,
            blob_url=_blob_url(e, state_dir),
            blob_url_file=e.get(BLOB_URL_FILE_ENV, "") if not e.get("THAW_BLOB_URL") else "",
            gateway_host=gw_host,
            gateway_port=gw_port,
            gateway_url=e.get("THAW_GATEWAY_URL", f"http://{gw_host}:{gw_port}"),
            token=e.get("THAW_TOKEN") or None,
            nats_creds=Path(e[NATS_CREDS_ENV]) if e.get(NATS_CREDS_ENV) else None,
            nats_auth_dir=Path(e.get(NATS_AUTH_DIR_ENV) or stack_nats_auth_dir(state_dir)),
            otlp_endpoint=e.get("THAW_OTLP_ENDPOINT") or None,
            trace_console=e.get("THAW_TRACE_CONSOLE", "0") not in ("", "0", "false"),
            log_level=e.get("THAW_LOG_LEVEL", "INFO").upper(),
            node_id=e.get("THAW_NODE_ID") or socket.gethostname(),
            volume_max_bytes=int(e.get("THAW_VOLUME_MAX_BYTES") or 100 << 30),
            volume_commit_interval_s=float(e.get("THAW_VOLUME_COMMIT_INTERVAL_S") or 5.0),
            volume_cache_bytes=int(e.get("THAW_VOLUME_CACHE_BYTES") or 20 << 30),
            volume_gc_interval_s=float(e.get("THAW_VOLUME_GC_INTERVAL_S") or 3600.0),
            volume_chunk_grace_s=float(e.get("THAW_VOLUME_CHUNK_GRACE_S") or 3600.0),
            metrics_host=e.get("THAW_METRICS_HOST") or "127.0.0.1",
            web_domain=e.get("THAW_WEB_DOMAIN", "").strip(".").lower(),
            web_max_body_bytes=int(e.get("THAW_WEB_MAX_BODY_BYTES") or 100 << 20),
            web_start_timeout_s=float(e.get("THAW_WEB_START_TIMEOUT_S") or 60.0),
            payload_inline_bytes=int(e.get("THAW_PAYLOAD_INLINE_BYTES") or 256 << 10),
            payload_max_bytes=int(e.get("THAW_PAYLOAD_MAX_BYTES") or 4 << 30),
            gateway_body_budget_bytes=int(e.get("THAW_GATEWAY_BODY_BUDGET_BYTES") or 256 << 20),
            metrics_port=int(e.get("THAW_METRICS_PORT") or 0),
            database_password_file=e.get("THAW_DATABASE_PASSWORD_FILE", ""),
        )

    def database_password_path(self) -> Path:
        if self.database_password_file:
            return Path(self.database_password_file).expanduser()
        return self.state_dir / DATABASE_PASSWORD_FILE_NAME

    def database_password(self) -> str | None:
        """The Postgres password, read from its file: None when the URL
        carries one itself, or when there is no file and none was named."""
        if urlsplit(self.database_url).password:
            return None
        path = self.database_password_path()
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            if self.database_password_file:
                raise ConfigError(f"THAW_DATABASE_PASSWORD_FILE: {path} does not exist") from None
            return None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the Postgres password file {path}: {exc.strerror}"
            ) from None

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these same settings."""
        env = {
            "THAW_STATE_DIR": str(self.state_dir),
            "THAW_NATS_URL": self.nats_url,
            "THAW_NATS_PORT": str(self.nats_port),
            "THAW_NATS_CLUSTER_SIZE": str(self.nats_cluster_size),
            "THAW_NATS_CLUSTER_PORT": str(self.nats_cluster_port),
            "THAW_NATS_REPLICAS": str(self.nats_replicas),
            "THAW_DATABASE_URL": self.database_url,
            "THAW_POSTGRES_PORT": str(self.postgres_port),
            "THAW_GATEWAY_HOST": self.gateway_host,
            "THAW_GATEWAY_PORT": str(self.gateway_port),
            "THAW_GATEWAY_URL": self.gateway_url,
            "THAW_TRACE_CONSOLE": "1" if self.trace_console else "0",
            "THAW_LOG_LEVEL": self.log_level,
            "THAW_NODE_ID": self.node_id,
            "THAW_VOLUME_MAX_BYTES": str(self.volume_max_bytes),
            "THAW_VOLUME_COMMIT_INTERVAL_S": str(self.volume_commit_interval_s),
            "THAW_VOLUME_CACHE_BYTES": str(self.volume_cache_bytes),
            "THAW_VOLUME_GC_INTERVAL_S": str(self.volume_gc_interval_s),
            "THAW_VOLUME_CHUNK_GRACE_S": str(self.volume_chunk_grace_s),
            "THAW_METRICS_HOST": self.metrics_host,
            "THAW_WEB_DOMAIN": self.web_domain,
            "THAW_WEB_MAX_BODY_BYTES": str(self.web_max_body_bytes),
            "THAW_WEB_START_TIMEOUT_S": str(self.web_start_timeout_s),
            "THAW_PAYLOAD_INLINE_BYTES": str(self.payload_inline_bytes),
            "THAW_PAYLOAD_MAX_BYTES": str(self.payload_max_bytes),
            "THAW_GATEWAY_BODY_BUDGET_BYTES": str(self.gateway_body_budget_bytes),
        }
        if self.token:
            env["THAW_TOKEN"] = self.token
        if self.database_password_file:
            env["THAW_DATABASE_PASSWORD_FILE"] = self.database_password_file
        # The URL may carry the S3 keys: a child reads the same file instead.
        if self.blob_url_file:
            env[BLOB_URL_FILE_ENV] = self.blob_url_file
        else:
            env["THAW_BLOB_URL"] = self.blob_url
        if self.nats_creds:
            env[NATS_CREDS_ENV] = str(self.nats_creds)
        env[NATS_AUTH_DIR_ENV] = str(self.nats_auth_dir)
        if self.otlp_endpoint:
            env["THAW_OTLP_ENDPOINT"] = self.otlp_endpoint
        return env
