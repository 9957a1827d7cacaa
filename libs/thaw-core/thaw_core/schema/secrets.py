"""The values of a container's secrets, asked for by the agent that starts or
restores it (or by the builder, for a registry's credentials) and answered by
the gateway, which alone holds the key.

An asker names only secrets it was granted: whoever placed the work signs a
``SecretsGrant`` into its command (the scheduler into ``StartContainer`` and
``StartSandbox``, the gateway into ``BuildRequest``) and the asker hands it
back with its ``SecretsRequest``. The gateway answers only for a grant whose
MAC verifies (``thaw_core.secrets_grant``), which has not expired, whose
node is the asker's (the answer goes to that node's inbox alone), and which
lists every secret asked for."""

from __future__ import annotations

from thaw_core.schema.base import Message
from thaw_core.schema.secret_grants import SecretRef, SecretsGrant


class SecretsRequest(Message, tag="secrets_request"):
    app: str
    function: str
    secrets: list[SecretRef]
    # The grant of the command that placed the container (None: refused).
    grant: SecretsGrant | None = None


class SecretsReply(Message, tag="secrets_reply"):
    """``env``: the secrets' keys and values, later secrets overriding earlier
    ones; or ``error``, naming what is missing (never a value)."""

    env: dict[str, str] = {}
    error: str = ""
