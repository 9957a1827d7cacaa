"""The build plan's types: a planned step, a registry base, a plan error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from thaw_core import layers
from thaw_core.schema import ImageStep

from thaw_builder.registry import RegistryImage

if TYPE_CHECKING:
    from thaw_builder.dockerfile_plan import DockerOp

# base: the rootfs; registry: a registry image's layers (and its python);
# run: a command in a build container; files: local files the client
# uploaded; tree: a Dockerfile's COPY/ADD/WORKDIR, done in an overlay of the
# layers below; stage: a Dockerfile stage started from an earlier one (its
# layers); meta: no layer (env, workdir, an empty package list).
StepKind = Literal["base", "registry", "run", "files", "tree", "stage", "meta"]


class PlanError(Exception):
    """The image spec cannot be built as given; ``step`` is its index (-1: the whole spec)."""

    def __init__(self, step: int, op: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.op = op


@dataclass(frozen=True)
class RegistryBase:
    """A registry image as a stage's base: its layers by id, base first."""

    image: RegistryImage
    layer_ids: list[str]
    add_python: str | None
    # Whether the image runs functions (its python is looked for): a
    # Dockerfile stage that only feeds a COPY --from needs none.
    need_python: bool = True


@dataclass(frozen=True)
class PlannedStep:
    # Its place in the build's progress: the image's steps, a Dockerfile's
    # instructions counted one each.
    index: int
    step: ImageStep
    kind: StepKind
    layer_id: str
    # The image's env and workdir as this step sees them (set by earlier steps).
    env: dict[str, str]
    workdir: str
    # The Dockerfile stage it belongs to (0 outside a Dockerfile).
    stage: int = 0
    registry: RegistryBase | None = None
    docker: DockerOp | None = None
    # A "base" step's rootfs: the one of the Python version the image asks for.
    rootfs: Path | None = None

    @property
    def op(self) -> str:
        return op_of(self.step)


def op_of(step: ImageStep) -> str:
    return type(step).__struct_config__.tag  # type: ignore[return-value]


def registry_base_id(base: RegistryBase) -> str:
    """The id of a registry base step: its pinned manifest, chained on its layers."""
    parent = base.layer_ids[-1] if base.layer_ids else ""
    return layers.layer_id(
        parent,
        {
            "op": "from_registry",
            "manifest": base.image.reference.digest,
            **({"add_python": base.add_python} if base.add_python else {}),
            **({} if base.need_python else {"python": False}),
        },
    )


class StepFailed(Exception):
    def __init__(
        self,
        step: PlannedStep,
        message: str,
        *,
        exit_code: int | None = None,
        tail: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code
        self.tail = list(tail)
