"""Registry credentials from a thaw secret, fetched as the agent fetches a
container's: a ``SecretsRequest`` on ``thaw.secrets.fetch`` with the grant the
gateway signed into the ``BuildRequest``, answered by the gateway, which alone
holds the key. The secret is a named one (``thaw secret
create``) with ``REGISTRY_USERNAME`` and ``REGISTRY_PASSWORD``; its values
are used for the pull and never logged or stored."""

from __future__ import annotations

from typing import Protocol

import msgspec
from thaw_core import contract
from thaw_core.bus import Bus
from thaw_core.schema import SecretRef, SecretsGrant, SecretsReply, SecretsRequest, encode

from thaw_builder.registry import Credentials, RegistryError

USERNAME_KEY = "REGISTRY_USERNAME"
PASSWORD_KEY = "REGISTRY_PASSWORD"
FETCH_TIMEOUT_S = 10.0

_reply = msgspec.json.Decoder(SecretsReply)


class SecretSource(Protocol):
    async def values(
        self, app: str, function: str, name: str, grant: SecretsGrant | None
    ) -> dict[str, str]: ...


class BusSecrets:
    """Secrets from the gateway, over the bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def values(
        self, app: str, function: str, name: str, grant: SecretsGrant | None
    ) -> dict[str, str]:
        request = SecretsRequest(
            app=app,
            function=function,
            secrets=[SecretRef(name=name, required_keys=[])],
            grant=grant,
        )
        try:
            msg = await self.bus.request(
                contract.SECRETS_FETCH, encode(request), timeout_s=FETCH_TIMEOUT_S
            )
        except Exception as e:  # noqa: BLE001 - no gateway, a timeout: said as the reason
            raise RegistryError(f"secret {name!r}: the gateway did not answer ({e!r})") from None
        reply = _reply.decode(msg.data)
        if reply.error:
            raise RegistryError(f"secret {name!r}: {reply.error}")
        return reply.env


async def credentials(
    source: SecretSource | None,
    secret: str | None,
    requested_by: str,
    grant: SecretsGrant | None = None,
) -> Credentials | None:
    """The registry credentials in ``secret`` (None when the image names none),
    fetched under the build request's ``grant`` (the gateway's leave)."""
    if secret is None:
        return None
    if source is None:
        raise RegistryError(f"secret {secret!r}: this builder has no way to fetch secrets")
    app, _, functions = requested_by.partition("/")
    env = await source.values(app, functions.split(",")[0], secret, grant)
    missing = [k for k in (USERNAME_KEY, PASSWORD_KEY) if not env.get(k)]
    if missing:
        raise RegistryError(f"secret {secret!r} lacks {' and '.join(missing)}")
    return Credentials(env[USERNAME_KEY], env[PASSWORD_KEY])
