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
  the base too with a foreign rootfs);
- one Dockerfile on a registry image built by thaw's step engine and by
  Debian's buildah (vfs storage, its layer cache on), side by side: cold,
  fully cached, and with its last RUN changed (services/builder/README.md).

Drives the builder's core directly (no NATS) against a real Postgres and the
local-directory blob store (the embedded stack's default). Run with
``make bench``.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


# The same Dockerfile for both engines: a user, a 20 MB layer, an env, a
# workdir, a USER and a RUN as that user; MARKER changes the last RUN only.
BENCH_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ENV APP_MODE=bench
WORKDIR /app
RUN echo {nonce} > /app/nonce && useradd --uid 1234 --create-home appuser
RUN head -c 20000000 /dev/urandom > /app/blob
RUN python3 -c "print(sum(range(10**6)))" > /app/sum
USER appuser
RUN echo {marker} > /home/appuser/marker
"""
# Instructions after FROM; buildah commits each (and says "Using cache" for each reused).
BENCH_INSTRUCTIONS = 7


def dockerfile(nonce: str, marker: str) -> str:
    return BENCH_DOCKERFILE.replace("{nonce}", nonce).replace("{marker}", marker)


@dataclass
class EngineFigures:
    cold_s: float
    cached_s: float
    changed_s: float
    rebuilt_on_change: int

    def row(self, name: str) -> str:
        return (
            f"{name:>18}: cold {self.cold_s:6.2f} s, all cached {self.cached_s:6.2f} s, "
            f"last RUN changed {self.changed_s:6.2f} s ({self.rebuilt_on_change} rebuilt)"
        )


async def thaw_engine(db: Database, root: Path, base: str, nonce: str) -> EngineFigures:
    blob = LocalBlobStore(root / "blobs")
    settings = Settings.from_env({"THAW_STATE_DIR": str(root / "state")})
    builder = Builder(
        catalog=Catalog(db),
        blob=blob,
        config=BuilderConfig.from_env(settings, {}),
        pip=PipSettings.from_host(),
    )

    async def build(marker: str) -> tuple[float, int]:
        step = {
            "op": "from_dockerfile",
            "path": "Dockerfile",
            "dockerfile": dockerfile(nonce, marker),
            "build_args": {"BASE": base},
        }
        spec = msgspec.convert({"steps": [step]}, ImageSpec)
        t = time.perf_counter()
        result = await builder.build(BuildRequest(build_id=uuid.uuid4().hex, image=spec), Quiet())
        assert result.ok, f"{result.error}\n" + "\n".join(result.log_tail)
        return time.perf_counter() - t, result.built_steps

    cold_s, _ = await build("one")
    cached_s, rebuilt = await build("one")
    assert rebuilt == 0
    changed_s, rebuilt = await build("two")
    return EngineFigures(cold_s, cached_s, changed_s, rebuilt)


def buildah_engine(root: Path, base: str, nonce: str) -> EngineFigures:
    """buildah without a daemon, as root, vfs storage, its layer cache on."""
    context = root / "context"
    context.mkdir(parents=True)
    storage = [
        "buildah", "--storage-driver", "vfs",
        "--root", str(root / "storage"), "--runroot", str(root / "run"),
    ]  # fmt: skip

    def build(marker: str) -> tuple[float, int]:
        (context / "Dockerfile").write_text(dockerfile(nonce, marker))
        t = time.perf_counter()
        out = subprocess.run(
            [
                *storage, "bud", "--layers", "--network", "none", "--isolation", "oci",
                "--tls-verify=false", "--build-arg", f"BASE={base}",
                str(context),
            ],
            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - t
        assert out.returncode == 0, out.stdout + out.stderr
        used_cache = out.stdout.count("Using cache")
        return elapsed, BENCH_INSTRUCTIONS - used_cache

    cold_s, _ = build("one")
    cached_s, rebuilt = build("one")
    changed_s, rebuilt = build("two")
    return EngineFigures(cold_s, cached_s, changed_s, rebuilt)


@pytest.mark.timeout(1800)  # vfs copies the whole tree per instruction: minutes
async def test_dockerfile_thaw_steps_vs_buildah(
    db: Database, workdir: Path, base_image: str
) -> None:
    """The same Dockerfile on the same registry image, by thaw's own step
    engine and by Debian's buildah, side by side (each from empty storage)."""
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed: `make bench` installs it (Debian's buildah)")
    nonce = uuid.uuid4().hex
    ours = await thaw_engine(db, workdir / "thaw", base_image, nonce)
    theirs = await asyncio.to_thread(buildah_engine, workdir / "buildah", base_image, nonce)
    print(
        "\nDockerfile build, same file and base image:\n"
        + ours.row("thaw step engine")
        + "\n"
        + theirs.row("buildah (vfs)")
        + f"\nratios buildah/thaw: cold {theirs.cold_s / ours.cold_s:.2f}x, "
        f"cached {theirs.cached_s / ours.cached_s:.2f}x, "
        f"changed {theirs.changed_s / ours.changed_s:.2f}x"
    )
