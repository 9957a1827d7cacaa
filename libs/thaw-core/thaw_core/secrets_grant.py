"""Grants: which secrets an agent (or the builder) may fetch, and for what.

The gateway holds the key to every secret and answers ``SecretsRequest``s on
``contract.SECRETS_FETCH``. Every node's agent may ask there, so the request
alone cannot say what to answer: the asker would choose. Instead the service
that places work signs a ``SecretsGrant`` into the command it sends, and the
asker hands it back with its request:

- the scheduler, into ``StartContainer`` and ``StartSandbox``, for the node it
  chose (a command reaches that node alone: ``permissions.node_grants``);
- the gateway, into ``BuildRequest``, for the builder (registry credentials).

A grant is HMAC-SHA256 (``mac``) over every other field, under a key that the
scheduler and the gateway share and nothing else reads: the file named by
``THAW_SECRETS_GRANT_KEY_FILE``, else ``<state_dir>/secrets-grant.key`` (made
0600 on first use, as the embedded stack's services share the state dir; a
mounted secret in compose and Kubernetes). It is not in Postgres: a service
that reads the database (the builder) must not be able to mint grants.

The gateway answers only for a grant that verifies, has not expired, names the
asker's node (the reply goes to that node's inbox, which no other node can
read) and lists every secret asked for. A restore happens within its
container's start command, so it fetches under that command's grant.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from thaw_core import contract, permissions
from thaw_core.private_file import read_or_create
from thaw_core.schema import SecretRef, SecretsGrant, SecretsRequest

KEY_FILE_ENV = "THAW_SECRETS_GRANT_KEY_FILE"
KEY_FILE_NAME = "secrets-grant.key"
KEY_BYTES = 32
# How long a grant is good for after its command was sent. A container
# fetches at its first connection and again once a snapshot is taken, which
# for a large image and a GPU checkpoint can be long after the command; a
# grant seen by nobody but its node needs no short life.
TTL_S = 6 * 3600.0
_LABEL = b"thaw.secrets-grant.v1\0"
# The shared agents' credential of a compose or Kubernetes fleet speaks for
# every node and reads every node's commands: its inbox may receive any
# node's answers.
_ANY_NODE_INBOX = contract.agent_inbox_prefix(permissions.ANY_NODE)
_BUILDER_INBOX = contract.inbox_prefix(permissions.BUILDER)


class GrantKeyError(Exception):
    """The grant key file is unreadable or malformed."""


def key_path(state_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    e = os.environ if environ is None else environ
    return Path(e[KEY_FILE_ENV]).expanduser() if e.get(KEY_FILE_ENV) else state_dir / KEY_FILE_NAME


def new_key_text() -> str:
    """A fresh key as its file holds it: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def load_key(state_dir: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The grant key, made (0600) when the file does not exist yet."""
    path = key_path(state_dir, environ)
    try:
        text = read_or_create(path, new_key_text)
    except OSError as e:
        raise GrantKeyError(f"{KEY_FILE_ENV}: cannot read {path}: {e.strerror}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise GrantKeyError(f"{KEY_FILE_ENV}: {path} is not base64") from None
    if len(key) != KEY_BYTES:
        raise GrantKeyError(f"{KEY_FILE_ENV}: {path} holds {len(key)} bytes, not {KEY_BYTES}")
    return key


def _mac(key: bytes, grant: SecretsGrant) -> bytes:
    body = msgspec.json.encode(msgspec.structs.replace(grant, mac=b""))
    return hmac.digest(key, _LABEL + body, "sha256")


def issue(
    key: bytes,
    *,
    node_id: str,
    app: str,
    function: str,
    container_id: str,
    secrets: Sequence[SecretRef],
    version: int = 0,
    now: float | None = None,
) -> SecretsGrant | None:
    """The signed grant of ``secrets`` for one container (None when it has none)."""
    if not secrets:
        return None
    grant = SecretsGrant(
        node_id=node_id,
        app=app,
        function=function,
        container_id=container_id,
        secrets=list(secrets),
        expires_at=(time.time() if now is None else now) + TTL_S,
        version=version,
    )
    return msgspec.structs.replace(grant, mac=_mac(key, grant))


def holder_inboxes(grant: SecretsGrant) -> tuple[str, ...]:
    """The inbox prefixes the answer under ``grant`` may go to: its node's
    agent's (and the fleet's shared agents'), or the builder's for a build."""
    if not grant.node_id:
        return (_BUILDER_INBOX,)
    return (contract.agent_inbox_prefix(grant.node_id), _ANY_NODE_INBOX)


def refusal(key: bytes, req: SecretsRequest, reply_to: str, now: float | None = None) -> str:
    """Why ``req``, whose answer would go to ``reply_to``, is refused ('' when
    it is not). Says what is wrong, never a value."""
    grant = req.grant
    if grant is None:
        return "the request carries no grant (only the command that placed the container has one)"
    if not hmac.compare_digest(grant.mac, _mac(key, grant)):
        return "its grant does not verify (forged or altered)"
    if (time.time() if now is None else now) > grant.expires_at:
        return "its grant has expired"
    if not any(reply_to.startswith(p + ".") for p in holder_inboxes(grant)):
        who = f"node {grant.node_id!r}" if grant.node_id else "the builder"
        return f"its grant is {who}'s, and the asker is not"
    if (req.app, req.function) != (grant.app, grant.function):
        return f"its grant is for {grant.app}/{grant.function}"
    granted = {msgspec.json.encode(r) for r in grant.secrets}
    extra = [r.name for r in req.secrets if msgspec.json.encode(r) not in granted]
    if extra:
        return f"not in its grant: {', '.join(extra)}"
    return ""
