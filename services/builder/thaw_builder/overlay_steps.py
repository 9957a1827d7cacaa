"""Layers made in an overlay of the layers below, with no container: the
files a client uploaded (``add_local_*``), a Dockerfile's ``COPY``/``ADD``
and ``WORKDIR``. ``COPY --from`` mounts its stage's layers beside, with a
throwaway upper dir. ``Stages`` is what a build keeps per Dockerfile stage.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from thaw_core import layers
from thaw_core.layers import ImageManifest, LayerRef
from thaw_core.schema import AddLocalDir, AddLocalFile, AddLocalPythonSource

from thaw_builder import dockerfile_build
from thaw_builder.catalog import StoredLayer
from thaw_builder.files import FilesError, add_files
from thaw_builder.plan_types import PlannedStep, StepFailed
from thaw_builder.registry_base import LayerMaker


class Reporter(Protocol):
    def output(self, step: int, stream: str, line: str) -> None: ...


class Stages:
    """Each stage's layers so far and registry base (a Dockerfile's; else stage 0)."""

    def __init__(self) -> None:
        self.refs: dict[int, list[LayerRef]] = {}
        self.bases: dict[int, ImageManifest] = {}

    def start_from(self, ps: PlannedStep) -> None:
        """A stage that starts ``FROM`` an earlier one: that one's layers."""
        assert ps.docker is not None and ps.docker.from_stage is not None
        self.refs[ps.stage] = list(self.refs.get(ps.docker.from_stage, []))
        if (base := self.bases.get(ps.docker.from_stage)) is not None:
            self.bases[ps.stage] = base


async def files_layer(
    maker: LayerMaker, ps: PlannedStep, below: list[LayerRef], reporter: Reporter, scratch: Path
) -> StoredLayer:
    assert isinstance(ps.step, AddLocalFile | AddLocalDir | AddLocalPythonSource)
    files = ps.step.files

    async def edit(root: Path) -> list[str]:
        await add_files(root, files, maker.blob)
        return [f"added {f.dest}" for f in files]

    return await in_overlay(maker, ps, below, reporter, scratch, edit)


async def tree_layer(
    maker: LayerMaker,
    ps: PlannedStep,
    below: list[LayerRef],
    reporter: Reporter,
    scratch: Path,
    stages: Stages,
) -> StoredLayer:
    """A Dockerfile's COPY/ADD or WORKDIR; ``COPY --from`` mounts its stage beside."""
    op = ps.docker
    assert op is not None

    async def edit(root: Path) -> list[str]:
        return await dockerfile_build.apply(op, root, maker.blob, source_root, scratch)

    if op.from_stage is None:
        source_root = None
        return await in_overlay(maker, ps, below, reporter, scratch, edit)
    source = scratch / "from"
    source_root = source / "rootfs"
    for d in ("upper", "ovl-work", "rootfs"):
        (source / d).mkdir(parents=True)
    lowers = await layers.lowerdirs(
        stages.refs.get(op.from_stage, []), maker.cache, maker.blob, rootfs=maker.config.rootfs
    )
    layers.overlay_mount(lowers, source_root, upper=source / "upper", work=source / "ovl-work")
    try:
        return await in_overlay(maker, ps, below, reporter, scratch, edit)
    finally:
        layers.unmount(source_root)


async def in_overlay(
    maker: LayerMaker,
    ps: PlannedStep,
    below: list[LayerRef],
    reporter: Reporter,
    scratch: Path,
    edit: Callable[[Path], Awaitable[list[str]]],
) -> StoredLayer:
    """The layer of ``edit`` done in an overlay of ``below`` (no container runs)."""
    lowers = await layers.lowerdirs(below, maker.cache, maker.blob, rootfs=maker.config.rootfs)
    upper, work, root = scratch / "upper", scratch / "ovl-work", scratch / "rootfs"
    for d in (upper, work, root):
        d.mkdir()
    layers.overlay_mount(lowers, root, upper=upper, work=work)
    try:
        done = await edit(root)
    except FilesError as e:
        raise StepFailed(ps, f"step {ps.index} ({ps.op}): {e}") from None
    finally:
        layers.unmount(root)
    for line in done:
        reporter.output(ps.index, "system", line)
    await asyncio.to_thread(shutil.rmtree, work, True)
    return await maker.store(ps.layer_id, upper, scratch)
