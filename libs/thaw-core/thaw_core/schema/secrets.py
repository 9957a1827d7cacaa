"""The values of a container's secrets, asked for by the agent that starts or
restores it and answered by the gateway, which alone holds the key."""

from __future__ import annotations

from thaw_core.schema.base import Message
from thaw_core.schema.functions import SecretRef


class SecretsRequest(Message, tag="secrets_request"):
    app: str
    function: str
    secrets: list[SecretRef]


class SecretsReply(Message, tag="secrets_reply"):
    """``env``: the secrets' keys and values, later secrets overriding earlier
    ones; or ``error``, naming what is missing (never a value)."""

    env: dict[str, str] = {}
    error: str = ""
