"""The OCI runtime config (``config.json``) of one thaw container.

What the container sees:

- ``/``: an overlay of the node's base rootfs (read-only lower) and a
  per-container upper layer, mounted by the agent at ``root.path``;
- ``/opt/thaw/bootstrap.py`` and ``/opt/thaw/path/N`` (read-only): the
  runtime's entry script and the host directories that make ``thaw``,
  ``thaw_core``, ``cloudpickle`` and ``msgspec`` importable, listed in
  ``THAW_RUNTIME_PATHS``. The base rootfs's python3 must match the host
  venv's minor version for msgspec's compiled module to load (both are
  3.11 on Debian bookworm);
- ``/thaw/bundle`` (read-only): the user's code;
- ``/run/thaw`` (read-write): holds ``agent.sock``, its only way out;
- each of the function's volumes (read-write) at its mount path, from the
  directory the agent materialised it in;
- its own pid, mount, ipc, uts and network namespaces (the network one has
  only ``lo``: no network access), /proc, a minimal /dev, /tmp tmpfs.

It runs as its image's user (a Dockerfile's ``USER``; root on thaw's own
images), with ``HOME`` that user's home unless the image or function sets
one, a reduced capability set and ``no_new_privileges``. Its cgroup's limits (cpu, memory, pids) are
``resources``'s.
"""

from __future__ import annotations

import importlib.util
import resource
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from thaw_core import contract
from thaw_core.image_users import ROOT, ImageUser, oci_user
from thaw_core.oci import MASKED_PATHS, READONLY_PATHS, standard_mounts
from thaw_core.schema import FunctionSpec

from thaw_agent.resources import linux_resources

BOOTSTRAP_IN_CONTAINER = "/opt/thaw/bootstrap.py"
RUNTIME_PATH_PREFIX = "/opt/thaw/path"
BUNDLE_IN_CONTAINER = "/thaw/bundle"
RUN_DIR_IN_CONTAINER = "/run/thaw"
PYTHON = "/usr/bin/python3"

# The packages the runtime imports; the directories holding them are mounted.
RUNTIME_PACKAGES = ("thaw", "thaw_core", "cloudpickle", "msgspec")
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class RuntimeFiles:
    """Host paths of what the runtime needs inside a container."""

    bootstrap: Path
    paths: tuple[Path, ...]


@cache
def runtime_files() -> RuntimeFiles:
    """Found from the packages' own locations: ``thaw`` and ``thaw_core`` are
    editable installs living in the source tree (libs/...), the others in the
    venv's site-packages. Found without importing them."""
    paths: list[Path] = []
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"the container runtime needs the package {name!r}, not installed")
        # .../<dir>/<name>/__init__.py -> <dir> is what goes on sys.path.
        parent = Path(spec.origin).resolve().parent.parent
        if parent not in paths:
            paths.append(parent)
    thaw_spec = importlib.util.find_spec("thaw")
    assert thaw_spec is not None and thaw_spec.origin is not None
    bootstrap = Path(thaw_spec.origin).resolve().parent / "runtime" / "bootstrap.py"
    if not bootstrap.is_file():
        raise RuntimeError(f"the container runtime's entry script is missing: {bootstrap}")
    return RuntimeFiles(bootstrap=bootstrap, paths=tuple(paths))


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


def _resources(spec: FunctionSpec) -> dict[str, Any]:
    return {"devices": [{"allow": False, "access": "rwm"}], **linux_resources(spec.resources)}


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
) -> dict[str, Any]:
    in_container = [f"{RUNTIME_PATH_PREFIX}/{i}" for i in range(len(runtime.paths))]
    env = container_env(container_id, spec, in_container)
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
    ]
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
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": _resources(spec),
            # A network namespace without a path: runc gives it only `lo`.
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def process_env(config: dict[str, Any], *, without: Collection[str] = ()) -> dict[str, str]:
    """The environment an OCI ``config`` gives its process, less ``without``."""
    pairs = (entry.partition("=") for entry in config["process"]["env"])
    return {k: v for k, _, v in pairs if k not in without}
