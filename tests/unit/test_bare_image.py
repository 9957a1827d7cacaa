"""Which images the gateway builds at deploy: a bare ``debian_slim()`` from a
client on thaw's own Python runs on the default rootfs unbuilt; from a client
on another Python it is built on the base of that version."""

from __future__ import annotations

import sys

import msgspec
import thaw as modal
from thaw_core.schema import ImageRef
from thaw_gateway.images import needs_build


def ref(steps: list[dict[str, object]]) -> ImageRef:
    return msgspec.convert({"steps": steps}, ImageRef)


def test_a_bare_base_on_thaws_own_python_needs_no_build() -> None:
    assert not needs_build(None)
    assert not needs_build(ref(modal.Image.debian_slim().spec()["steps"]))  # this client's
    assert not needs_build(ref([{"op": "debian_slim"}]))  # a client that sends no version


def test_another_python_or_a_step_needs_a_build() -> None:
    other = "3.13" if sys.version_info[:2] != (3, 13) else "3.14"
    assert needs_build(ref([{"op": "debian_slim", "client_python": other}]))
    assert needs_build(ref([{"op": "debian_slim", "python_version": other}]))
    assert needs_build(ref(modal.Image.debian_slim().pip_install("six").spec()["steps"]))
