"""The values of a container's secrets, asked of the gateway (which alone
holds the key) each time the agent starts or restores the container, so a
secret updated since the deploy or the snapshot reaches it. They go to the
container over its socket only: never into config.json or a log."""

from __future__ import annotations

import nats.errors
from thaw_core import contract
from thaw_core.bus import Bus, BusRequestError
from thaw_core.schema import FunctionSpec, SecretsGrant, SecretsReply, SecretsRequest, decoder

FETCH_TIMEOUT_S = 10.0

_reply = decoder(SecretsReply)


class SecretsUnavailable(Exception):
    """The secrets could not be fetched; the message names them, never a value."""


async def fetch_secrets(
    bus: Bus | None,
    app: str,
    spec: FunctionSpec,
    grant: SecretsGrant | None,
    *,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> dict[str, str]:
    """The environment ``spec``'s secrets make (later ones override earlier
    ones), fetched under ``grant``: the leave the command that placed the
    container here carries (the gateway answers nothing without one)."""
    if not spec.secrets:
        return {}
    names = ", ".join(ref.name for ref in spec.secrets)
    if bus is None:
        raise SecretsUnavailable(f"secrets {names}: this agent has no bus to fetch them on")
    request = SecretsRequest(app=app, function=spec.name, secrets=spec.secrets, grant=grant)
    try:
        msg = await bus.request(contract.SECRETS_FETCH, request, timeout_s=timeout_s)
    except nats.errors.NoRespondersError:
        raise SecretsUnavailable(f"secrets {names}: no gateway answers") from None
    except nats.errors.TimeoutError:
        raise SecretsUnavailable(
            f"secrets {names}: the gateway did not answer within {timeout_s:g}s"
        ) from None
    except BusRequestError as e:
        raise SecretsUnavailable(f"secrets {names}: {e}") from None
    reply = _reply.decode(msg.data)
    if reply.error:
        raise SecretsUnavailable(reply.error)
    return reply.env
