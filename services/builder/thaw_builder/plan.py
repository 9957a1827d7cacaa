"""From an image spec to a build plan: every step's layer id and what
building it means, checked before anything runs.

The plan is pure: it reads only the base rootfs's marker (for the base
layer's id), and for an image from a registry the ``RegistryImage`` resolved
before it (``registry.resolve``): the registry's layers get ids chained from
their blob digests, so two tags of one image share them, and the base step's
id is the pinned manifest's digest (not the tag, which moves). Whether a
layer already exists is the catalog's business.
"""

from __future__ import annotations

import posixpath
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
from thaw_core import layers
from thaw_core.schema import (
    AddLocalDir,
    AddLocalFile,
    AddLocalPythonSource,
    AptInstall,
    DebianSlim,
    Env,
    FileEntry,
    FromDockerfile,
    FromRegistry,
    ImageSpec,
    ImageStep,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    UvPipInstall,
    Workdir,
)

from thaw_builder.registry import RegistryImage

# base: the rootfs; registry: a registry image's layers (and its python);
# run: a command in a build container; files: local files the client
# uploaded; meta: no layer (env, workdir, an empty package list).
StepKind = Literal["base", "registry", "run", "files", "meta"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlanError(Exception):
    """The image spec cannot be built as given; ``step`` is its index (-1: the whole spec)."""

    def __init__(self, step: int, op: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.op = op


@dataclass(frozen=True)
class PlannedStep:
    index: int
    step: ImageStep
    kind: StepKind
    layer_id: str
    # The image's env and workdir as this step sees them (set by earlier steps).
    env: dict[str, str]
    workdir: str

    @property
    def op(self) -> str:
        return op_of(self.step)


@dataclass(frozen=True)
class RegistryBase:
    """A registry image as the plan's first step: its layers by id, base first."""

    image: RegistryImage
    layer_ids: list[str]
    add_python: str | None


@dataclass(frozen=True)
class Plan:
    steps: list[PlannedStep]
    python_version: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    registry: RegistryBase | None = None

    @property
    def image_id(self) -> str:
        return self.steps[-1].layer_id


def op_of(step: ImageStep) -> str:
    return type(step).__struct_config__.tag  # type: ignore[return-value]


def make_plan(spec: ImageSpec, rootfs: Path, registry: RegistryImage | None = None) -> Plan:
    """The plan of ``spec``; ``registry`` is its ``from_registry`` base, resolved."""
    if not spec.steps:
        raise PlanError(-1, "", "the image has no steps: start it with Image.debian_slim()")
    base = spec.steps[0]
    env: dict[str, str] = {}
    workdir = "/"
    registry_base: RegistryBase | None = None
    if isinstance(base, FromRegistry):
        if registry is None:
            raise PlanError(0, "from_registry", f"image {base.tag} was not resolved")
        python_version = _add_python(base.add_python)
        registry_base = registry_plan(registry, base.add_python)
        parent = registry_base.layer_ids[-1] if registry_base.layer_ids else ""
        parent = layers.layer_id(
            parent,
            {
                "op": "from_registry",
                "manifest": registry.reference.digest,
                **({"add_python": base.add_python} if base.add_python else {}),
            },
        )
        env, workdir = dict(registry.config.env), registry.config.workdir
        planned = [PlannedStep(0, base, "registry", parent, {}, "/")]
    else:
        python_version = _base_python(base, rootfs)
        parent = layers.base_layer_id(rootfs, python_version)
        planned = [PlannedStep(0, base, "base", parent, {}, workdir)]
    for index, step in enumerate(spec.steps[1:], start=1):
        kind = _check(index, step)
        parent = layers.layer_id(parent, identity(step))
        planned.append(PlannedStep(index, step, kind, parent, dict(env), workdir))
        match step:
            case Env(vars=new):
                env.update(new)
            case Workdir(path=path):
                workdir = posixpath.normpath(posixpath.join(workdir, path))
    return Plan(planned, python_version, env, workdir, registry_base)


def registry_plan(image: RegistryImage, add_python: str | None) -> RegistryBase:
    ids: list[str] = []
    parent = ""
    for layer in image.layers:
        parent = layers.layer_id(parent, {"op": "registry_layer", "digest": layer.digest})
        ids.append(parent)
    return RegistryBase(image, ids, add_python)


def runtime_python() -> str:
    """The Python thaw's runtime runs on (its compiled modules are built for it)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _add_python(wanted: str | None) -> str:
    if wanted is None or _minor(wanted) == runtime_python():
        return runtime_python()
    raise PlanError(
        0,
        "from_registry",
        f"add_python={wanted!r}: thaw's runtime runs on Python {runtime_python()}; "
        f"use add_python={runtime_python()!r}",
    )


def identity(step: ImageStep) -> ImageStep | dict[str, Any]:
    """The step as its layer id sees it: without the deploying machine's paths
    (the content sha256s of its files stand for them), files in a stable order
    and each with its mode spelled out (msgspec omits a default int only when
    it is the very same object, so 0o644 sent explicitly would not be)."""
    match step:
        case AddLocalFile() | AddLocalDir() | AddLocalPythonSource():
            out = msgspec.to_builtins(step)
            out.pop("local_path", None)
            out["files"] = [
                {"dest": f.dest, "sha256": f.sha256, "mode": f.mode}
                for f in sorted(step.files, key=lambda f: f.dest)
            ]
            return out
        case PipInstallFromRequirements():
            return msgspec.structs.replace(step, path="")
    return step


def _base_python(step: ImageStep, rootfs: Path) -> str:
    available = layers.rootfs_python_version(rootfs)
    match step:
        case DebianSlim(python_version=None):
            return available
        case DebianSlim(python_version=wanted) if _minor(wanted) == available:
            return available
        case DebianSlim(python_version=wanted):
            raise PlanError(
                0,
                "debian_slim",
                f"python_version={wanted!r} is not available: this builder's base image has "
                f"Python {available}",
            )
        case FromDockerfile():
            raise PlanError(
                0,
                op_of(step),
                f"{op_of(step)} is not supported yet: start the image with "
                "Image.from_registry(tag) or Image.debian_slim() and add its steps",
            )
    raise PlanError(
        0,
        op_of(step),
        f"an image starts with Image.debian_slim() or Image.from_registry(), not {op_of(step)}",
    )


def _minor(version: str) -> str:
    return ".".join(version.strip().split(".")[:2])


def _check(index: int, step: ImageStep) -> StepKind:
    """The step's kind, after checking what decoding could not."""

    def fail(message: str) -> PlanError:
        return PlanError(index, op_of(step), message)

    match step:
        case DebianSlim() | FromRegistry() | FromDockerfile():
            raise fail(f"{op_of(step)} can only be the first step of an image")
        case PipInstall(packages=pkgs) | UvPipInstall(packages=pkgs) | AptInstall(packages=pkgs):
            if any(not p.strip() for p in pkgs):
                raise fail("package names must not be empty")
            return "run" if pkgs else "meta"  # nothing to install: nothing to run
        case RunCommands(commands=commands):
            if any(not c.strip() for c in commands):
                raise fail("commands must not be empty")
            return "run" if commands else "meta"
        case PipInstallFromRequirements(requirements=None):
            raise fail(
                "the requirements file's text was not sent: the client must put it in the "
                "step's `requirements` field"
            )
        case PipInstallFromRequirements():
            return "run"
        case Env(vars=new):
            bad = [k for k in new if not _ENV_NAME.match(k)]
            if bad:
                raise fail(f"invalid environment variable names: {bad}")
            return "meta"
        case Workdir(path=path):
            if not path.startswith("/"):
                raise fail(f"workdir takes an absolute path, got {path!r}")
            return "meta"
        case (
            AddLocalFile(files=files) | AddLocalDir(files=files) | AddLocalPythonSource(files=files)
        ):
            _check_files(files, fail)
            return "files"
    raise fail(f"unknown step {op_of(step)}")


def _check_files(files: list[FileEntry], fail: Callable[[str], PlanError]) -> None:
    if not files:
        raise fail(
            "no files were sent: the client must upload each local file as the blob "
            "files/<sha256> and list it in the step's `files`"
        )
    dests: set[str] = set()
    for f in files:
        if not f.dest.startswith("/") or posixpath.normpath(f.dest) != f.dest or f.dest == "/":
            raise fail(f"file destination must be a normalised absolute path, got {f.dest!r}")
        if not _SHA256.match(f.sha256):
            raise fail(f"{f.dest}: sha256 must be 64 lowercase hex digits, got {f.sha256!r}")
        if not 0 <= f.mode <= 0o7777:
            raise fail(f"{f.dest}: mode {f.mode:o} is not a file mode")
        if f.dest in dests:
            raise fail(f"{f.dest} is listed twice")
        dests.add(f.dest)
