"""What the builder reads of a request it could not decode: the build id to
report the failure under. The wire types themselves are in thaw_core.schema
(module ``images``), the subjects in thaw_core.contract."""

from __future__ import annotations

import msgspec


class _BuildIdOnly(msgspec.Struct):
    """What a refused request may still say: where to send its failure."""

    build_id: str = ""


def salvage_build_id(data: bytes) -> str:
    """The build id of a request that failed to decode, or "" when it has none."""
    try:
        return msgspec.json.decode(data, type=_BuildIdOnly).build_id
    except msgspec.DecodeError:
        return ""
