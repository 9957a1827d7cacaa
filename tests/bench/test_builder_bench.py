"""Image build times, measured in one run on this machine.

Prints the time of:

- a cold build of the base image (``Image.debian_slim()`` with an empty
  catalog: the default rootfs packed, compressed and stored as a layer);
- a cold build of a small image on that base (pip_install("six"),
  run_commands, env);
- a fully cached rebuild of that image (median of several), and its ratio
  to the cold build;
- a node pulling the image into an empty layer cache (download, verify,
  unpack every layer that is not its own rootfs, here all but the base, and
  the base too with a foreign rootfs).

Drives the builder's core directly (no NATS) against a real Postgres and the
local-directory blob store (the embedded stack's default). Run with
``make bench``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from fixtures.host import needs_containers
from thaw_builder.build import Builder
from thaw_builder.catalog import Catalog
from thaw_builder.config import BuilderConfig
from thaw_builder.pipconf import PipSettings
from thaw_core import layers
from thaw_core.blob import LocalBlobStore
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.layers import LayerCache
from thaw_core.schema import BuildRequest, ImageSpec

pytestmark = needs_containers

CACHED_RUNS = 5


class Quiet:
    async def progress(self, step: object, status: str, *, elapsed_s: float = 0.0) -> None:
        pass

    def output(self, step: int, stream: str, line: str) -> None:
        pass


def request(*steps: dict[str, object]) -> BuildRequest:
    spec = msgspec.convert({"steps": [{"op": "debian_slim"}, *steps]}, ImageSpec)
    return BuildRequest(build_id=uuid.uuid4().hex, image=spec)


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="thaw-bench-builder-", dir="/var/tmp"))
    yield root
    for point in layers.mounts_under(root):
        layers.unmount(point)
    shutil.rmtree(root, ignore_errors=True)


async def test_build_times(db: Database, workdir: Path) -> None:
    blob = LocalBlobStore(workdir / "blobs")
    settings = Settings.from_env({"THAW_STATE_DIR": str(workdir / "state")})
    config = BuilderConfig.from_env(settings, {})
    builder = Builder(catalog=Catalog(db), blob=blob, config=config, pip=PipSettings.from_host())
    quiet = Quiet()

    t = time.perf_counter()
    base = await builder.build(request(), quiet)
    cold_base_s = time.perf_counter() - t
    assert base.ok and base.built_steps == 1, base
    assert base.manifest is not None
    base_mb = base.manifest.layers[0].size / 1e6

    steps = (
        {"op": "pip_install", "packages": ["six"]},
        {"op": "run_commands", "commands": [f"echo {uuid.uuid4().hex} > /hello"]},
        {"op": "env", "vars": {"A": "1"}},
    )
    t = time.perf_counter()
    cold = await builder.build(request(*steps), quiet)
    cold_image_s = time.perf_counter() - t
    assert cold.ok and cold.built_steps == 2 and cold.cached_steps == 1, cold

    cached_runs = []
    for _ in range(CACHED_RUNS):
        t = time.perf_counter()
        again = await builder.build(request(*steps), quiet)
        cached_runs.append(time.perf_counter() - t)
        assert again.ok and again.built_steps == 0 and again.image_id == cold.image_id
    cached_s = statistics.median(cached_runs)

    assert cold.manifest is not None
    t = time.perf_counter()
    await layers.lowerdirs(cold.manifest.layers, LayerCache(workdir / "node-a"), blob)
    pull_s = time.perf_counter() - t
    t = time.perf_counter()
    foreign = workdir / "no-rootfs"  # a node whose own rootfs differs: pulls the base too
    await layers.lowerdirs(
        cold.manifest.layers, LayerCache(workdir / "node-b"), blob, rootfs=foreign
    )
    pull_all_s = time.perf_counter() - t

    print(
        f"\nbuilder: cold base image {cold_base_s:.2f} s ({base_mb:.0f} MB zstd layer); "
        f"cold pip_install+run_commands+env image {cold_image_s:.2f} s; "
        f"fully cached rebuild {cached_s * 1000:.1f} ms (median of {CACHED_RUNS}; "
        f"{cold_image_s / cached_s:.0f}x faster than cold); "
        f"node pull of the image {pull_s:.2f} s with its own rootfs as base, "
        f"{pull_all_s:.2f} s with the base pulled too"
    )
