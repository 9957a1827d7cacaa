"""Encryption of secret values at rest: AES-256-GCM under a key kept apart
from the database.

The key ring comes from, in this order:

- ``THAW_SECRETS_KEY``: base64 keys separated by commas (at scale, from the
  deployment's secret store);
- ``THAW_SECRETS_KEY_FILE``, else ``<state_dir>/secrets.key``: one base64 key
  per line (a mounted file at scale; for the embedded stack, a 0600 file made
  here on first use).

The first key encrypts; every key decrypts, so a ring with a new key first and
the old one after it is the middle of a rotation (``SecretStore.reencrypt``
moves every row to the first key). A key's id is derived from the key itself,
stored beside each ciphertext, and names the key without revealing it.

The associated data binds a ciphertext to its row (scope and name): a
ciphertext copied onto another secret's row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from thaw_core.private_file import write_private

KEY_ENV = "THAW_SECRETS_KEY"
KEY_FILE_ENV = "THAW_SECRETS_KEY_FILE"
KEY_FILE_NAME = "secrets.key"
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretKeyError(Exception):
    """The key ring is missing, malformed, or lacks the key a row was sealed with."""


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"thaw-secret-key-id\0" + key).hexdigest()[:16]


def new_key() -> str:
    """A fresh key, base64 (what a key file line or THAW_SECRETS_KEY holds)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"a key in {where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"a key in {where} is {len(key)} bytes; AES-256 takes {KEY_BYTES}")
    return key


class SecretBox:
    """Seals and opens values with a key ring (first key current)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretKeyError("the secrets key ring is empty")
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        self.current = key_id(keys[0])

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        return Sealed(
            self.current, nonce, self._ciphers[self.current].encrypt(nonce, plaintext, aad)
        )

    def open(self, sealed: Sealed, aad: bytes) -> bytes:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SecretKeyError(
                f"a secret is sealed with key {sealed.key_id}, which the key ring lacks"
            )
        return cipher.decrypt(sealed.nonce, sealed.ciphertext, aad)


def key_file(state_dir: Path, env: Mapping[str, str]) -> Path:
    return Path(env.get(KEY_FILE_ENV) or state_dir / KEY_FILE_NAME).expanduser()


def load_box(state_dir: Path, env: Mapping[str, str] | None = None) -> SecretBox:
    """The key ring from the environment or the key file, the file made (0600,
    one new key) when neither exists."""
    e = os.environ if env is None else env
    if e.get(KEY_ENV):
        return SecretBox([_decode_key(k, KEY_ENV) for k in e[KEY_ENV].split(",") if k.strip()])
    path = key_file(state_dir, e)
    if not path.exists() and not e.get(KEY_FILE_ENV):
        _create_key_file(path)
    try:
        lines = path.read_text().split()
    except OSError as err:
        raise SecretKeyError(f"cannot read the secrets key file {path}: {err.strerror}") from None
    return SecretBox([_decode_key(line, str(path)) for line in lines])


def _create_key_file(path: Path) -> None:
    # Another gateway may make it meanwhile: the first one's key wins.
    write_private(path, new_key() + "\n", replace=False)
