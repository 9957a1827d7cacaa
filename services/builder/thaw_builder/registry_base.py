"""A registry image as an image's base: its layers in thaw's layer store, and
the Python thaw's runtime will run on in it.

Each registry layer is stored once per blob digest: a layer the catalog has
is never pulled again, and when any is missing the image is copied with
``skopeo`` into a scratch OCI layout, and each missing blob unpacked (OCI
whiteouts become overlay ones) and packed as a thaw layer (``_store``), kept
unpacked in the cache for the steps built on it. The base is then recorded in
the catalog as an image of its own (id: the base step's layer id), with the
python it has, so that an image built on it later finds it there whole.

The python is found by running ``python3`` in a build container on the
layers. With ``add_python`` an image without it gets the distribution's
python3 (apt-get, apk, dnf or microdnf) as one more layer. The runtime's
compiled modules are built for the builder's own Python minor version: an
image with another one fails, naming the version found.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from thaw_core import layers
from thaw_core.blob import BlobStore
from thaw_core.layers import EMPTY_DIGEST, ImageManifest, LayerCache, LayerRef

from thaw_builder.catalog import Catalog, StoredLayer
from thaw_builder.config import BuilderConfig
from thaw_builder.pipconf import PipSettings
from thaw_builder.plan import PlannedStep, RegistryBase, runtime_python
from thaw_builder.registry import RegistryError, Skopeo, blob_path
from thaw_builder.runner import BASE_ENV, Command, StepContainer
from thaw_builder.steps import tool_env

PULL_TIMEOUT_S = 3600.0
_FIND_PYTHON = (
    "for p in /usr/local/bin/python3 /usr/bin/python3; do"
    ' if [ -x "$p" ]; then printf "thaw-python=%s " "$p";'
    ' "$p" -c "import sys; print(\'%d.%d.%d\' % sys.version_info[:3])"; exit 0; fi;'
    " done; echo thaw-python=none"
)
_FOUND = re.compile(r"^thaw-python=(\S+)(?: (\d+\.\d+)\.\d+)?$")
_INSTALL_PYTHON = (
    "if command -v apt-get >/dev/null; then apt-get update -q"
    " && apt-get install -y -q --no-install-recommends python3"
    " && apt-get clean && rm -rf /var/lib/apt/lists/*;"
    " elif command -v apk >/dev/null; then apk add --no-cache python3;"
    " elif command -v dnf >/dev/null; then dnf install -y python3 && dnf clean all;"
    " elif command -v microdnf >/dev/null; then microdnf install -y python3 && microdnf clean all;"
    " else echo 'no package manager (apt-get, apk, dnf) to install python3 with' >&2; exit 1; fi"
)


class LayerMaker(Protocol):
    """What of the ``Builder`` a registry base is made with."""

    catalog: Catalog
    blob: BlobStore
    cache: LayerCache
    config: BuilderConfig
    pip: PipSettings

    async def store(self, layer_id: str, tree: Path, scratch: Path) -> StoredLayer: ...


OnOutput = Callable[[str, str], None]


async def make_registry_base(
    maker: LayerMaker, ps: PlannedStep, skopeo: Skopeo, output: OnOutput
) -> ImageManifest:
    """The base's layers stored and its python found (when it runs
    functions); recorded in the catalog."""
    base = ps.registry
    assert base is not None
    image = base.image
    ref = image.reference
    scratch = maker.cache.scratch("pull-")
    found: tuple[str, str] | None = ("", "")
    try:
        refs = await _layers(maker, base, skopeo, scratch, output)
        lowers = await layers.lowerdirs(refs, maker.cache, maker.blob)
        env = {**BASE_ENV, **image.config.env}
        if base.need_python:
            found = await _find_python(maker, lowers, env, scratch, output)
        if found is None or (base.need_python and found[1] != runtime_python()):
            if base.add_python is None or found is not None:
                raise RegistryError(_python_problem(str(ref), found))
            output("system", f"add_python={base.add_python}: installing python3")
            stored = await _install_python(maker, ps.layer_id, lowers, env, scratch, output)
            if stored.digest != EMPTY_DIGEST:
                refs.append(LayerRef(layer_id=ps.layer_id, digest=stored.digest, size=stored.size))
            lowers = await layers.lowerdirs(refs, maker.cache, maker.blob)
            found = await _find_python(maker, lowers, env, scratch, output)
            if found is None or found[1] != runtime_python():
                raise RegistryError(
                    _python_problem(str(ref), found, after="the distribution's python3")
                )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    config = image.config
    manifest = ImageManifest(
        image_id=ps.layer_id,
        layers=refs,
        env=config.env,
        workdir=config.workdir,
        python_version=found[1],
        python="" if found[0] in ("", "/usr/bin/python3") else found[0],
        user=config.user,
        entrypoint=config.entrypoint,
        cmd=config.cmd,
        labels=config.labels,
        exposed_ports=config.exposed_ports,
    )
    await maker.catalog.add_image(manifest)
    return manifest


async def _layers(
    maker: LayerMaker, base: RegistryBase, skopeo: Skopeo, scratch: Path, output: OnOutput
) -> list[LayerRef]:
    image = base.image
    have = [await maker.catalog.layer(lid) for lid in base.layer_ids]
    missing = [i for i, s in enumerate(have) if s is None]
    if missing:
        total = sum(image.layers[i].size for i in missing)
        output("system", f"pulling {image.reference}: {len(missing)} layers, {_mb(total)}")
        layout = scratch / "oci"
        await skopeo.copy(
            image.reference, layout, lambda line: output("stdout", line), PULL_TIMEOUT_S
        )
        for n, i in enumerate(missing, start=1):
            layer = image.layers[i]
            tree = scratch / f"layer-{i}"
            await asyncio.to_thread(layers.unpack_layer, blob_path(layout, layer.digest), tree)
            have[i] = await maker.store(base.layer_ids[i], tree, scratch)
            output("system", f"layer {n}/{len(missing)} {layer.digest[:19]} ({_mb(layer.size)})")
    else:
        output("system", f"{image.reference}: every layer is stored already, nothing pulled")
    return [
        LayerRef(layer_id=s.layer_id, digest=s.digest, size=s.size)
        for s in have
        if s is not None and s.digest != EMPTY_DIGEST
    ]


async def _in_container(
    maker: LayerMaker,
    lowers: Sequence[Path],
    cmd: Command,
    scratch: Path,
    output: OnOutput,
) -> tuple[int, list[str], StepContainer]:
    work = scratch / f"run-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    maker.config.runc_root.mkdir(parents=True, exist_ok=True)
    container = StepContainer(
        work, runc_root=maker.config.runc_root, container_id=f"build-{uuid.uuid4().hex[:12]}"
    )
    lines: list[str] = []

    def on_line(stream: str, line: str) -> None:
        lines.append(line)
        output(stream, line)

    outcome = await container.run(lowers, cmd, on_line)
    return outcome.exit_code, lines, container


async def _find_python(
    maker: LayerMaker, lowers: Sequence[Path], env: dict[str, str], scratch: Path, output: OnOutput
) -> tuple[str, str] | None:
    """``(path, "major.minor")`` of the image's python3, or None when it has none."""
    cmd = Command(argv=["/bin/sh", "-c", _FIND_PYTHON], env=env, timeout_s=120)
    code, lines, _ = await _in_container(maker, lowers, cmd, scratch, output)
    for line in lines:
        m = _FOUND.match(line.strip())
        if m and m[1] != "none" and m[2]:
            return m[1], m[2]
        if m:
            return None
    raise RegistryError(
        f"cannot look for python3 in the image (exit code {code}): {' '.join(lines[-3:])}"
    )


async def _install_python(
    maker: LayerMaker,
    layer_id: str,
    lowers: Sequence[Path],
    env: dict[str, str],
    scratch: Path,
    output: OnOutput,
) -> StoredLayer:
    tools = tool_env(maker.pip, maker.config.pip_cache)
    cmd = Command(
        argv=["/bin/sh", "-c", _INSTALL_PYTHON],
        env={**env, **tools.env, "DEBIAN_FRONTEND": "noninteractive"},
        ro_mounts=tools.ro,
        rw_mounts=tools.rw,
        timeout_s=maker.config.step_timeout_s,
    )
    code, lines, container = await _in_container(maker, lowers, cmd, scratch, output)
    if code != 0:
        raise RegistryError(
            f"add_python: installing python3 failed (exit code {code}): {' '.join(lines[-3:])}"
        )
    return await maker.store(layer_id, container.upper, scratch)


def _python_problem(ref: str, found: tuple[str, str] | None, *, after: str = "") -> str:
    wanted = runtime_python()
    if found is None:
        return f"image {ref} has no python3: pass add_python={wanted!r}"
    what = f"image {ref} has Python {found[1]} ({found[0]})"
    if after:
        what += f" after installing {after}"
    return (
        f"{what}; thaw's runtime runs on Python {wanted}: use an image with Python {wanted}"
        f"{'' if after else f', or one without python and add_python={wanted!r}'}"
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
