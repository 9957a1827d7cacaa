"""What the agent tells a container through its environment: config.json's,
with the agent's ``Configure`` applied over it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import msgspec
from thaw_core.container_protocol import SOCKET_IN_CONTAINER
from thaw_core.contract import (
    ENV_AGENT_SOCKET,
    ENV_CONTAINER_ID,
    ENV_FUNCTION_SPEC,
    ENV_SNAPSHOT,
)
from thaw_core.schema import FunctionSpec

_spec_decoder = msgspec.json.Decoder(FunctionSpec)


class RuntimeEnv(NamedTuple):
    container_id: str
    spec_json: str
    # Overridable so that the runtime runs outside a container (tests, debugging).
    socket_path: str = SOCKET_IN_CONTAINER
    # ENV_SNAPSHOT=1: pause for a memory snapshot after the snap=True hooks.
    snapshot: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> RuntimeEnv:
        return cls(
            container_id=environ.get(ENV_CONTAINER_ID, ""),
            spec_json=environ.get(ENV_FUNCTION_SPEC, ""),
            socket_path=environ.get(ENV_AGENT_SOCKET, SOCKET_IN_CONTAINER),
            snapshot=environ.get(ENV_SNAPSHOT, "") == "1",
        )

    def spec(self) -> FunctionSpec:
        """The function's spec; ValueError saying what the agent got wrong."""
        if not self.container_id:
            raise ValueError(f"{ENV_CONTAINER_ID} is not set: the agent names every container")
        if not self.spec_json:
            raise ValueError(
                f"{ENV_FUNCTION_SPEC} is not set: the agent passes the function's spec"
            )
        try:
            spec = _spec_decoder.decode(self.spec_json)
        except msgspec.DecodeError as e:
            raise ValueError(f"{ENV_FUNCTION_SPEC} is not a FunctionSpec: {e}") from e
        if spec.max_inputs < 1:
            raise ValueError(f"max_inputs must be at least 1, got {spec.max_inputs}")
        return spec
