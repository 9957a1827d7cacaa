"""One image build: plan it, reuse every layer the catalog has, build the
others once (a lock per layer id, shared by every builder), record the image.

A step's layer is built by whoever first takes its lock; a build that needs
the same layer meanwhile reports ``waiting``, then finds it in the catalog
(a cache hit). So two deploys of one new image build it once, and two images
that share their first steps build those once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Protocol

import msgspec
from thaw_core import hosttools, layers
from thaw_core.blob import BlobStore
from thaw_core.image_users import UserError
from thaw_core.layers import ImageManifest, LayerCache, LayerError, LayerRef
from thaw_core.schema import (
    BuildRequest,
    BuildResult,
    FromDockerfile,
    FromRegistry,
    ImageLookup,
    ImageLookupReply,
    ImageStep,
    StepStatus,
)

from thaw_builder.catalog import Catalog, StoredLayer
from thaw_builder.config import BuilderConfig
from thaw_builder.dockerfile_plan import registry_images as dockerfile_registry_images
from thaw_builder.once import once
from thaw_builder.overlay_steps import Stages, files_layer, tree_layer
from thaw_builder.pipconf import PipSettings
from thaw_builder.plan import Plan, PlanError, PlannedStep, make_plan, op_of
from thaw_builder.plan_types import StepFailed
from thaw_builder.registry import RegistryError, RegistryImage, Skopeo, resolve
from thaw_builder.registry_base import make_registry_base
from thaw_builder.runner import StepContainer, Stream, run_quietly
from thaw_builder.secrets import SecretSource, credentials
from thaw_builder.steps import command_for

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where a build's progress and output go (the service: NATS)."""

    async def progress(
        self, step: PlannedStep, status: StepStatus, *, elapsed_s: float = 0.0
    ) -> None: ...

    def output(self, step: int, stream: Stream | str, line: str) -> None: ...


class Builder:
    def __init__(
        self,
        *,
        catalog: Catalog,
        blob: BlobStore,
        config: BuilderConfig,
        pip: PipSettings,
        secrets: SecretSource | None = None,
    ) -> None:
        self.catalog = catalog
        self.blob = blob
        self.config = config
        self.pip = pip
        self.secrets = secrets
        self.cache = LayerCache(config.layers)

    # ------------------------------------------------------------ entry points

    async def build(self, request: BuildRequest, reporter: Reporter) -> BuildResult:
        started = time.monotonic()
        build_id = request.build_id

        def failed(step: int, op: str, error: str, **kw: object) -> BuildResult:
            return BuildResult(
                build_id=build_id,
                ok=False,
                failed_step=step,
                failed_op=op,
                error=error,
                elapsed_s=round(time.monotonic() - started, 3),
                **kw,  # type: ignore[arg-type]
            )

        skopeo: Skopeo | None = None
        base = request.image.steps[0] if request.image.steps else None
        try:
            refs_wanted = registry_refs(base)
            resolved: dict[str, RegistryImage] = {}
            if refs_wanted:
                assert isinstance(base, FromRegistry | FromDockerfile)
                skopeo = Skopeo(
                    await credentials(
                        self.secrets, base.secret, request.requested_by, request.secrets_grant
                    )
                )
                for ref in refs_wanted:
                    resolved[ref] = await resolve(ref, skopeo)
            plan = make_plan(request.image, self.config.rootfs, resolved)
        except PlanError as e:
            return failed(e.step, e.op, str(e))
        except LayerError as e:
            return failed(0, "debian_slim", str(e))
        except RegistryError as e:
            return failed(0, op_of(base) if base is not None else "", str(e))

        existing = await self.catalog.image(plan.image_id)
        if existing is not None:
            for ps in plan.steps:
                await reporter.progress(ps, "applied" if ps.kind == "meta" else "cached")
            return BuildResult(
                build_id=build_id,
                ok=True,
                image_id=plan.image_id,
                manifest=existing,
                cached_steps=sum(ps.kind != "meta" for ps in plan.steps),
                elapsed_s=round(time.monotonic() - started, 3),
            )
        if problem := host_problem(self.config):
            return failed(-1, "", problem)

        stages = Stages()
        built = cached = 0
        for ps in plan.steps:
            refs = stages.refs.setdefault(ps.stage, [])
            if ps.kind in ("meta", "stage"):
                if ps.kind == "stage":
                    stages.start_from(ps)
                await reporter.progress(ps, "applied")
                continue
            try:
                if ps.kind == "registry":
                    assert skopeo is not None
                    base_manifest, made = await self._registry_base(ps, skopeo, reporter)
                    stages.bases[ps.stage] = base_manifest
                    refs.extend(base_manifest.layers)
                    built += made
                    cached += not made
                    continue
                stored, made = await self._layer(ps, refs, reporter, stages)
            except RegistryError as e:
                await reporter.progress(ps, "failed")
                return failed(ps.index, ps.op, str(e))
            except StepFailed as e:
                await reporter.progress(ps, "failed")
                return failed(ps.index, ps.op, str(e), exit_code=e.exit_code, log_tail=e.tail)
            except Exception as e:  # a build failure, reported, never a crash
                log.exception("build %s: step %d (%s) failed", build_id, ps.index, ps.op)
                await reporter.progress(ps, "failed")
                return failed(ps.index, ps.op, f"internal error: {type(e).__name__}: {e}")
            built += made
            cached += not made
            refs.append(
                LayerRef(
                    layer_id=ps.layer_id,
                    digest=stored.digest,
                    size=stored.size,
                    base=layers.BASE_DEBIAN_SLIM if ps.kind == "base" else "",
                )
            )
        refs = stages.refs.get(plan.final_stage, [])
        base_manifest = stages.bases.get(plan.final_stage)
        manifest = _manifest(plan, refs, base_manifest)
        await self.catalog.add_image(manifest)
        with contextlib.suppress(Exception):
            await self.cache.evict(self.config.cache_bytes)
        return BuildResult(
            build_id=build_id,
            ok=True,
            image_id=plan.image_id,
            manifest=manifest,
            cached_steps=cached,
            built_steps=built,
            elapsed_s=round(time.monotonic() - started, 3),
        )

    async def lookup(self, query: ImageLookup) -> ImageLookupReply:
        if (
            query.image is not None
            and query.image.steps
            and isinstance(query.image.steps[0], FromRegistry | FromDockerfile)
        ):
            # Its id needs the registry's answer: the build resolves it (and
            # finds every layer it has, pulling nothing).
            return ImageLookupReply(image_id="", built=False)
        if query.image is not None:
            try:
                image_id = make_plan(query.image, self.config.rootfs).image_id
            except (PlanError, LayerError) as e:
                return ImageLookupReply(image_id="", built=False, error=str(e))
        elif query.image_id:
            image_id = query.image_id
        else:
            return ImageLookupReply(image_id="", built=False, error="give an image_id or an image")
        manifest = await self.catalog.image(image_id)
        return ImageLookupReply(image_id=image_id, built=manifest is not None, manifest=manifest)

    async def recover(self) -> None:
        """Clean up after a builder that died mid-build: its build containers,
        overlay mounts and scratch dirs. One builder per THAW_BUILDER_DIR."""
        runc_root = self.config.runc_root
        if runc_root.is_dir():
            for state in runc_root.iterdir():
                await run_quietly(
                    [
                        str(hosttools.runc_path()),
                        "--root",
                        str(runc_root),
                        "delete",
                        "--force",
                        state.name,
                    ]
                )
        for point in layers.mounts_under(self.cache.tmp):
            with contextlib.suppress(OSError):
                layers.unmount(point)
        await asyncio.to_thread(self.cache.sweep)

    # ------------------------------------------------------------ layers

    async def _layer(
        self, ps: PlannedStep, below: list[LayerRef], reporter: Reporter, stages: Stages
    ) -> tuple[StoredLayer, bool]:
        """The step's layer from the catalog, or built now; True when built here."""

        async def make() -> StoredLayer:
            scratch = self.cache.scratch("build-")
            try:
                match ps.kind:
                    case "base":
                        return await self._store(
                            ps, ps.rootfs or self.config.rootfs, scratch, adopt=False
                        )
                    case "run":
                        return await self._run_step(ps, below, reporter, scratch)
                    case "files":
                        return await files_layer(self, ps, below, reporter, scratch)
                    case "tree":
                        return await tree_layer(self, ps, below, reporter, scratch, stages)
                raise AssertionError(f"step kind {ps.kind} has no layer")
            finally:
                await asyncio.to_thread(shutil.rmtree, scratch, True)

        return await once(self.catalog, ps, reporter, lambda: self.catalog.layer(ps.layer_id), make)

    async def _registry_base(
        self, ps: PlannedStep, skopeo: Skopeo, reporter: Reporter
    ) -> tuple[ImageManifest, bool]:
        """A registry base's layers and python (an image of its own in the catalog)."""
        return await once(
            self.catalog,
            ps,
            reporter,
            lambda: self.catalog.image(ps.layer_id),
            lambda: make_registry_base(
                self, ps, skopeo, lambda stream, line: reporter.output(ps.index, stream, line)
            ),
        )

    async def _run_step(
        self, ps: PlannedStep, below: list[LayerRef], reporter: Reporter, scratch: Path
    ) -> StoredLayer:
        lowers = await layers.lowerdirs(below, self.cache, self.blob, rootfs=self.config.rootfs)
        cmd = command_for(
            ps,
            pip=self.pip,
            pip_cache=self.config.pip_cache,
            scratch=scratch,
            timeout_s=self.config.step_timeout_s,
        )
        self.config.runc_root.mkdir(parents=True, exist_ok=True)
        container = StepContainer(
            scratch, runc_root=self.config.runc_root, container_id=f"build-{uuid.uuid4().hex[:12]}"
        )
        try:
            outcome = await container.run(
                lowers, cmd, lambda stream, line: reporter.output(ps.index, stream, line)
            )
        except UserError as e:
            raise StepFailed(ps, f"step {ps.index} ({ps.op}): {e}") from None
        if outcome.exit_code != 0:
            why = (
                "ran past its time limit"
                if outcome.timed_out
                else f"exited with code {outcome.exit_code}"
            )
            raise StepFailed(
                ps,
                f"step {ps.index} ({ps.op}) {why}",
                exit_code=outcome.exit_code,
                tail=outcome.tail,
            )
        return await self._store(ps, container.upper, scratch)

    async def _store(
        self, ps: PlannedStep, tree: Path, scratch: Path, *, adopt: bool = True
    ) -> StoredLayer:
        return await self.store(ps.layer_id, tree, scratch, adopt=adopt)

    async def store(
        self, layer_id: str, tree: Path, scratch: Path, *, adopt: bool = True
    ) -> StoredLayer:
        """Pack ``tree`` as the layer ``layer_id``, upload it, catalog it, and
        keep it unpacked in the cache (``adopt``) for the steps built on it."""
        packed = await asyncio.to_thread(
            layers.pack_layer, tree, scratch / "layer.tar.zst", level=self.config.zstd_level
        )
        if packed.path is not None:
            key = layers.blob_key(packed.digest)
            if not await self.blob.exists(key):
                await self.blob.put(key, packed.path, sha256=packed.digest)
            packed.path.unlink()
            if adopt:
                await self.cache.adopt(packed.digest, tree)
        stored = StoredLayer(layer_id, packed.digest, packed.size)
        await self.catalog.add_layer(stored)
        return stored


def registry_refs(base: ImageStep | None) -> list[str]:
    """The registry images an image starts from, to resolve before planning."""
    if isinstance(base, FromRegistry):
        return [base.tag]
    if isinstance(base, FromDockerfile):
        return dockerfile_registry_images(base)
    return []


def _manifest(plan: Plan, refs: list[LayerRef], base: ImageManifest | None) -> ImageManifest:
    """The image: its layers, the env and workdir its steps set, and what its
    base (a registry image's config and python) and its Dockerfile say."""
    manifest = ImageManifest(
        image_id=plan.image_id,
        layers=[r for r in refs if r.digest != layers.EMPTY_DIGEST],
        env=plan.env,
        workdir=plan.workdir,
        python_version=plan.python_version,
        python=plan.python,
    )
    if base is None:
        return manifest
    config = {k: v for k, v in plan.config.items() if v or k == "cmd"}
    if "labels" in config:
        config["labels"] = {**base.labels, **config["labels"]}
    if "exposed_ports" in config:
        config["exposed_ports"] = sorted({*base.exposed_ports, *config["exposed_ports"]})
    return msgspec.structs.replace(
        base,
        image_id=manifest.image_id,
        layers=manifest.layers,
        env=plan.env,
        workdir=plan.workdir,
        **config,
    )


def host_problem(config: BuilderConfig) -> str:
    """Why this machine cannot build images, or "" when it can."""
    if os.geteuid() != 0:
        return "the builder must run as root (it mounts overlays and runs runc)"
    if not hosttools.runc_path().exists():
        return f"runc not found at {hosttools.runc_path()}: run `make setup`"
    if not hosttools.rootfs_ready(config.rootfs):
        return f"no finished base rootfs at {config.rootfs}: run `make setup`"
    return ""
