"""A secret as a spec names it, and the leave to fetch secrets that travels
with a command (``thaw_core.secrets_grant`` signs and checks it). A module of
its own so that commands of every kind (``StartContainer``, ``StartSandbox``,
``BuildRequest``) can carry a grant without importing one another."""

from __future__ import annotations

from thaw_core.schema.base import Spec


class SecretRef(Spec):
    """One of a function's secrets, by name: never its values. The agent asks
    the gateway for the values of a container's secrets as it starts or
    restores it."""

    name: str
    # A deploy fails unless the secret has each of these keys.
    required_keys: list[str] = []
    # Values the app's own deploy stored (Secret.from_dict, from_dotenv,
    # from_local_environ), under the app's scope; else a named secret.
    app_scoped: bool = False


class SecretsGrant(Spec):
    """Leave to fetch ``secrets`` for one container (or one build), signed by
    the service that placed it. ``node_id``: the node the container was
    placed on; "" for a build (the builder's)."""

    node_id: str
    app: str
    function: str
    # The container's (or sandbox's) id; a build's id for a build.
    container_id: str
    secrets: list[SecretRef]
    # Unix time after which the gateway refuses it.
    expires_at: float
    # The function's deployed version (0: a sandbox or a build).
    version: int = 0
    # HMAC-SHA256 of the other fields under the grant key (thaw_core.secrets_grant).
    mac: bytes = b""
