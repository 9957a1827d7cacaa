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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

from thaw_builder.dockerfile_plan import plan_dockerfile, registry_layer_ids
from thaw_builder.plan_types import (
    PlanError,
    PlannedStep,
    RegistryBase,
    StepKind,
    op_of,
    registry_base_id,
)
from thaw_builder.registry import RegistryImage
from thaw_builder.runtime_layer import runtime_step

__all__ = ["Plan", "PlanError", "PlannedStep", "RegistryBase", "make_plan", "op_of"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Plan:
    steps: list[PlannedStep]
    python_version: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    # The stage whose layers make the image (a Dockerfile's last; else 0).
    final_stage: int = 0
    # What the manifest records from a Dockerfile: user, entrypoint, cmd, labels, ports.
    config: dict[str, Any] = field(default_factory=dict)
    # The image's python3 when it is not /usr/bin/python3 (a debian_slim base's).
    python: str = ""

    @property
    def image_id(self) -> str:
        return self.steps[-1].layer_id


def make_plan(
    spec: ImageSpec, rootfs: Path, registries: Mapping[str, RegistryImage] | None = None
) -> Plan:
    """The plan of ``spec``; ``registries``: its registry images (a
    ``from_registry`` base or a Dockerfile's FROMs), resolved, by reference."""
    if not spec.steps:
        raise PlanError(-1, "", "the image has no steps: start it with Image.debian_slim()")
    registries = registries or {}
    base = spec.steps[0]
    env: dict[str, str] = {}
    workdir = "/"
    final_stage = 0
    config: dict[str, Any] = {}
    if isinstance(base, FromRegistry):
        registry = registries.get(base.tag)
        if registry is None:
            raise PlanError(0, "from_registry", f"image {base.tag} was not resolved")
        python_version = _add_python(base.add_python)
        registry_base = registry_plan(registry, base.add_python)
        parent = registry_base_id(registry_base)
        env, workdir = dict(registry.config.env), registry.config.workdir
        planned = [PlannedStep(0, base, "registry", parent, {}, "/", registry=registry_base)]
    elif isinstance(base, FromDockerfile):
        python_version = _add_python(base.add_python, op="from_dockerfile")
        docker = plan_dockerfile(base, registries)
        planned, parent = docker.steps, docker.steps[-1].layer_id
        env, workdir, final_stage, config = (
            dict(docker.env),
            docker.workdir,
            docker.final_stage,
            docker.config,
        )
    else:
        python_version, base_rootfs = _base_python(base, rootfs)
        parent = layers.base_layer_id(base_rootfs, python_version)
        planned = [PlannedStep(0, base, "base", parent, {}, workdir, rootfs=base_rootfs)]
    first_index = len(planned)
    python = ""
    if planned[0].kind == "base":
        python = layers.rootfs_python_path(planned[0].rootfs)
    if planned[0].kind == "base" and python_version != runtime_python():
        # The runtime's packages for this Python, right on the base (shown as
        # part of step 0): every image on this base shares the layer.
        runtime = runtime_step()
        parent = layers.layer_id(parent, runtime)
        planned.append(PlannedStep(0, runtime, "run", parent, {}, workdir))
    for index, step in enumerate(spec.steps[1:], start=first_index):
        kind = _check(index, step)
        parent = layers.layer_id(parent, identity(step))
        planned.append(
            PlannedStep(index, step, kind, parent, dict(env), workdir, stage=final_stage)
        )
        match step:
            case Env(vars=new):
                env.update(new)
            case Workdir(path=path):
                workdir = posixpath.normpath(posixpath.join(workdir, path))
    return Plan(planned, python_version, env, workdir, final_stage, config, python)


def registry_plan(image: RegistryImage, add_python: str | None) -> RegistryBase:
    return RegistryBase(image, registry_layer_ids(image), add_python)


def runtime_python() -> str:
    """The Python thaw's runtime runs on (its compiled modules are built for it)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _add_python(wanted: str | None, op: str = "from_registry") -> str:
    if wanted is None or _minor(wanted) == runtime_python():
        return runtime_python()
    raise PlanError(
        0,
        op,
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


def _base_python(step: ImageStep, rootfs: Path) -> tuple[str, Path]:
    """The Python version of a ``debian_slim`` image and the rootfs that has it."""
    if not isinstance(step, DebianSlim):
        raise PlanError(
            0,
            op_of(step),
            f"an image starts with Image.debian_slim() or Image.from_registry(), not {op_of(step)}",
        )
    default = layers.rootfs_python_version(rootfs)
    bases = layers.python_bases(rootfs)
    if step.python_version is None:
        # The client's own version where this builder has it, else its default.
        wanted = _minor(step.client_python) if step.client_python else default
        version = wanted if wanted in bases else default
        return version, bases.get(version, rootfs)
    wanted = _minor(step.python_version)
    if wanted in bases:
        return wanted, bases[wanted]
    have = ", ".join(f"Python {v} ({root.name})" for v, root in sorted(bases.items(), key=_order))
    raise PlanError(
        0,
        "debian_slim",
        f"python_version={step.python_version!r} is not available: this builder's base images "
        f"have {have}; a node gets more with deploy/make-rootfs.sh (see the README)",
    )


def _order(item: tuple[str, Path]) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in item[0].split("."))


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
