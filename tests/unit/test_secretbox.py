"""The secrets key ring: AES-GCM sealing bound to its row, the key file made
0600 on first use, keys from the environment, and the ring a rotation uses."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from thaw_gateway.secretbox import (
    KEY_ENV,
    KEY_FILE_ENV,
    SecretBox,
    SecretKeyError,
    key_id,
    load_box,
    new_key,
)


def key() -> bytes:
    return base64.b64decode(new_key())


def test_a_sealed_value_opens_with_its_row_only() -> None:
    box = SecretBox([key()])
    sealed = box.seal(b"sk-live-123", b"row-a")
    assert b"sk-live-123" not in sealed.ciphertext
    assert box.open(sealed, b"row-a") == b"sk-live-123"
    with pytest.raises(InvalidTag):
        box.open(sealed, b"row-b")


def test_each_seal_takes_a_fresh_nonce() -> None:
    box = SecretBox([key()])
    a, b = box.seal(b"same", b"aad"), box.seal(b"same", b"aad")
    assert a.nonce != b.nonce and a.ciphertext != b.ciphertext


def test_a_rotation_ring_seals_with_the_new_key_and_opens_both() -> None:
    old, new = key(), key()
    sealed_old = SecretBox([old]).seal(b"v", b"aad")
    ring = SecretBox([new, old])
    assert ring.current == key_id(new)
    assert ring.open(sealed_old, b"aad") == b"v"
    assert ring.seal(b"v", b"aad").key_id == key_id(new)
    with pytest.raises(SecretKeyError, match=sealed_old.key_id):
        SecretBox([new]).open(sealed_old, b"aad")


def test_the_key_file_is_made_0600_on_first_use_and_kept(tmp_path: Path) -> None:
    box = load_box(tmp_path, {})
    path = tmp_path / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_box(tmp_path, {})
    assert again.current == box.current


def test_keys_from_the_environment_or_a_named_file(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    box = load_box(tmp_path, {KEY_ENV: f"{a},{b}"})
    assert box.key_ids == [key_id(base64.b64decode(a)), key_id(base64.b64decode(b))]
    assert not (tmp_path / "secrets.key").exists()
    mounted = tmp_path / "mounted.key"
    mounted.write_text(f"{b}\n{a}\n")
    assert load_box(tmp_path, {KEY_FILE_ENV: str(mounted)}).current == key_id(base64.b64decode(b))


def test_a_missing_named_file_or_a_bad_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="cannot read"):
        load_box(tmp_path, {KEY_FILE_ENV: str(tmp_path / "absent.key")})
    with pytest.raises(SecretKeyError, match="not base64"):
        load_box(tmp_path, {KEY_ENV: "not base64!"})
    with pytest.raises(SecretKeyError, match="32"):
        load_box(tmp_path, {KEY_ENV: base64.b64encode(b"short").decode()})
