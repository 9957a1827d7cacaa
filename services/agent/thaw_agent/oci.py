"""The OCI runtime config (``config.json``) of one thaw container.

What the container sees:

- ``/``: an overlay of the node's base rootfs (read-only lower) and a
  per-container upper layer, mounted by the agent at ``root.path``;
- ``/opt/thaw/bootstrap.py`` and ``/opt/thaw/path/N`` (read-only): the
  runtime's entry script and the host directories that make ``thaw`` and
  ``thaw_core`` (pure Python) importable, listed in ``THAW_RUNTIME_PATHS``,
  and the runtime's third-party packages (``thaw_core.runtime_dists``):
  on the agent's own Python the directory of exactly those that the agent
  laid out (``thaw_agent.runtime_dir``), never its whole environment; on
  another Python the layer the builder installed in the image at
  ``RUNTIME_DIR_IN_IMAGE`` (``thaw_builder.runtime_layer``);
- ``/thaw/bundle`` (read-only): the user's code;
- ``/run/thaw`` (read-write): holds ``agent.sock``, its only way out;
- each of the function's volumes (read-write) at its mount path, from the
  directory the agent mounted it at (an overlay: ``volume_overlay``);
- the GPUs it was given (``gpu_devices``): their device nodes, the
  driver's user-space files (read-only) and ``CUDA_VISIBLE_DEVICES``;
- its own pid, mount, ipc, uts and network namespaces (the network one has
  only ``lo``: no network access), /proc, a minimal /dev, /tmp tmpfs; or,
  given ``network`` (a sandbox without ``block_network``), the outbound-only
  namespace of ``thaw_core.outbound_netns`` at its path, and its
  ``resolv.conf`` bound over the image's.

It runs as its image's user (a Dockerfile's ``USER``; root on thaw's own
images), with ``HOME`` that user's home unless the image or function sets
one, in its own user namespace (``userns``: its root is an unprivileged host
uid), under the seccomp filter of ``seccomp``, with a reduced capability set
and ``no_new_privileges``. Its cgroup's limits (cpu, memory, pids) are
``resources``'s.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from thaw_core import contract
from thaw_core.image_users import ROOT, ImageUser, oci_user
from thaw_core.oci import MASKED_PATHS, READONLY_PATHS, RUNTIME_DIR_IN_IMAGE, standard_mounts
from thaw_core.schema import FunctionSpec

from thaw_agent import seccomp
from thaw_agent.gpu_devices import HIDDEN_RULES_ANNOTATION, GpuSetup
from thaw_agent.resources import linux_resources
from thaw_agent.userns import IdRange

BOOTSTRAP_IN_CONTAINER = "/opt/thaw/bootstrap.py"
RUNTIME_PATH_PREFIX = "/opt/thaw/path"
BUNDLE_IN_CONTAINER = "/thaw/bundle"
RUN_DIR_IN_CONTAINER = "/run/thaw"
PYTHON = "/usr/bin/python3"

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
NO_GPUS = GpuSetup()
_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class Network:
    """An outbound-only network namespace and the user namespace owning it
    (their paths), and its resolv.conf."""

    netns: str
    userns: str
    resolv_conf: Path


@dataclass(frozen=True)
class RuntimeFiles:
    """Host paths of what the runtime needs inside a container."""

    bootstrap: Path
    paths: tuple[Path, ...]
    # Directories of the image itself that go on the path before ``paths``:
    # its runtime layer, the runtime's packages built for the image's Python.
    in_image: tuple[str, ...] = ()


# Pure Python, mounted into every image whatever its Python version.
_PURE_PACKAGES = ("thaw", "thaw_core")


def runtime_for(python_version: str, own_packages: Path) -> RuntimeFiles:
    """What the runtime needs in an image on ``python_version`` ("": the
    agent's own): thaw's own packages, and ``own_packages`` (the directory
    ``runtime_dir.own_runtime_dir`` laid out) or, on another Python, the
    image's runtime layer."""
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not python_version or python_version == own:
        return RuntimeFiles(_bootstrap(), (*_pure_paths(), own_packages))
    return RuntimeFiles(_bootstrap(), _pure_paths(), (RUNTIME_DIR_IN_IMAGE,))


def no_runtime() -> RuntimeFiles:
    """For a sandbox: its commands are the user's, nothing of thaw is on a path."""
    return RuntimeFiles(_bootstrap(), ())


def _package_parent(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the container runtime needs the package {name!r}, not installed")
    # .../<dir>/<name>/__init__.py -> <dir> is what goes on sys.path.
    return Path(spec.origin).resolve().parent.parent


@cache
def _pure_paths() -> tuple[Path, ...]:
    """``thaw`` and ``thaw_core`` are editable installs living in the source
    tree (libs/...): their parents hold nothing else. Found without importing.
    Installed into an environment instead, their parent would be all of it,
    mounted into every container: refused, rather than leaked."""
    parents = tuple(dict.fromkeys(_package_parent(name) for name in _PURE_PACKAGES))
    for parent in parents:
        if parent.name in ("site-packages", "dist-packages"):
            raise RuntimeError(
                f"thaw is installed into {parent}, which containers would see whole: install "
                "it from its source tree (uv sync, as deploy/images/Dockerfile does)"
            )
    return parents


@cache
def _bootstrap() -> Path:
    thaw_spec = importlib.util.find_spec("thaw")
    assert thaw_spec is not None and thaw_spec.origin is not None
    bootstrap = Path(thaw_spec.origin).resolve().parent / "runtime" / "bootstrap.py"
    if not bootstrap.is_file():
        raise RuntimeError(f"the container runtime's entry script is missing: {bootstrap}")
    return bootstrap


def _nofile() -> int:
    # Raising the hard limit above the agent's own needs CAP_SYS_RESOURCE.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)


def _bind(source: Path, destination: str, *, readonly: bool) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro" if readonly else "rw", "nosuid", "nodev"],
    }


def _resources(spec: FunctionSpec, device_rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
    devices = [{"allow": False, "access": "rwm"}, *device_rules]
    return {"devices": devices, **linux_resources(spec.resources)}


def container_env(
    container_id: str, spec: FunctionSpec, runtime_paths: Sequence[str]
) -> dict[str, str]:
    # The user's env first: it must not override what the runtime relies on.
    env = dict(_BASE_ENV)
    env.update(spec.env)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            contract.ENV_CONTAINER_ID: container_id,
            contract.ENV_FUNCTION_SPEC: msgspec.json.encode(spec).decode(),
            contract.ENV_RUNTIME_PATHS: ":".join(runtime_paths),
        }
    )
    return env


def build_config(
    *,
    container_id: str,
    spec: FunctionSpec,
    rootfs: Path,
    bundle_dir: Path,
    run_dir: Path,
    cgroups_path: str,
    runtime: RuntimeFiles,
    extra_env: Mapping[str, str] | None = None,
    volumes: Sequence[tuple[Path, str]] = (),
    user: ImageUser = ROOT,
    ids: IdRange,
    gpus: GpuSetup = NO_GPUS,
    gpus_hidden: bool = False,
    network: Network | None = None,
) -> dict[str, Any]:
    """``gpus_hidden``: the GPUs' nodes are there but their device rules wait
    in an annotation until ``gpu_devices.reveal`` (see ``gpu_devices``)."""
    in_container = [f"{RUNTIME_PATH_PREFIX}/{i}" for i in range(len(runtime.paths))]
    env = container_env(container_id, spec, [*runtime.in_image, *in_container])
    env.update(gpus.env)
    if extra_env:
        env.update(extra_env)
    if user != ROOT and env.get("HOME") == _BASE_ENV["HOME"]:
        env["HOME"] = user.home
    mounts: list[dict[str, Any]] = [
        *standard_mounts(),
        _bind(runtime.bootstrap, BOOTSTRAP_IN_CONTAINER, readonly=True),
        *(
            _bind(host, dest, readonly=True)
            for host, dest in zip(runtime.paths, in_container, strict=True)
        ),
        _bind(bundle_dir, BUNDLE_IN_CONTAINER, readonly=True),
        _bind(run_dir, RUN_DIR_IN_CONTAINER, readonly=False),
        *(_bind(host, dest, readonly=False) for host, dest in volumes),
        *gpus.mounts,
    ]
    namespaces: list[dict[str, str]] = [
        {"type": t} for t in ("user", "pid", "network", "ipc", "uts", "mount")
    ]
    if network is not None:
        # The user namespace owning it too: ``runc exec`` joins both.
        namespaces[0] = {"type": "user", "path": network.userns}
        namespaces[2] = {"type": "network", "path": network.netns}
        mounts.append(_bind(network.resolv_conf, "/etc/resolv.conf", readonly=True))
    annotations = {}
    if gpus_hidden and gpus.rules:
        annotations[HIDDEN_RULES_ANNOTATION] = json.dumps(gpus.rules)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": oci_user(user),
            "args": [PYTHON, BOOTSTRAP_IN_CONTAINER],
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": _nofile(), "soft": _nofile()}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": container_id[:63],
        "annotations": annotations,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": _resources(spec, [] if gpus_hidden else gpus.rules),
            # A network namespace without a path: runc gives it only `lo`.
            "namespaces": namespaces,
            "uidMappings": ids.oci_mappings(),
            "gidMappings": ids.oci_mappings(),
            "seccomp": seccomp.default_profile(),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def process_env(config: dict[str, Any], *, without: Collection[str] = ()) -> dict[str, str]:
    """The environment an OCI ``config`` gives its process, less ``without``."""
    pairs = (entry.partition("=") for entry in config["process"]["env"])
    return {k: v for k, _, v in pairs if k not in without}
