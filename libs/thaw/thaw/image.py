"""``thaw.Image``: a container image described as a list of build steps.

Every method returns a new Image (images are values: ``base.pip_install(...)``
leaves ``base`` as it was). ``image.spec()`` is the steps the function's
spec carries (``FunctionSpec.image``) for the builder:
``{"steps": [{"op": ..., ...}, ...]}``.
Local paths are recorded absolute, as the deploying machine sees them; at
deploy, ``local_files(step)`` lists what each ``add_local_*`` step puts where
(the client uploads those files and lists their sha256s in the step).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import importlib.util
import os
import posixpath
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from thaw._env import is_local
from thaw.exception import InvalidError
from thaw.secret import Secret

Step = dict[str, Any]


def _flatten(kind: str, items: Sequence[str | Sequence[str]]) -> list[str]:
    """``pip_install("a", ["b", "c"])`` is ``pip_install("a", "b", "c")``, as in Modal."""
    out: list[str] = []
    for item in items:
        for value in [item] if isinstance(item, str) else item:
            if not isinstance(value, str) or not value.strip():
                raise InvalidError(f"{kind} takes non-empty strings, got {value!r}")
            out.append(value)
    return out


def _abs(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _options(**options: Any) -> dict[str, Any]:
    # Only what the user set, so that specs stay small and compare equal.
    return {k: v for k, v in options.items() if v not in (None, False, "", [])}


def _secret_name(secret: Secret | None) -> str | None:
    """The name of a registry-credentials secret: the builder fetches it by name."""
    if secret is None:
        return None
    if not isinstance(secret, Secret):
        raise InvalidError(f"secret takes a thaw.Secret, got {secret!r}")
    if secret.name is None:
        raise InvalidError(
            "registry credentials must be a named secret: create it with `thaw secret create "
            "NAME REGISTRY_USERNAME=... REGISTRY_PASSWORD=...` and pass "
            "thaw.Secret.from_name(NAME) (a Secret made from values here is not supported)"
        )
    return secret.name


class Image:
    def __init__(self, steps: tuple[Step, ...]) -> None:
        self._steps = steps

    def _then(self, step: Step) -> Image:
        return Image((*self._steps, step))

    def spec(self) -> dict[str, Any]:
        return {"steps": copy.deepcopy(list(self._steps))}

    def __repr__(self) -> str:
        return f"Image({[s['op'] for s in self._steps]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other._steps == self._steps

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------ bases

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        """Debian with the Python ``python_version`` asks for; without one, this
        client's own version where the builder has it (else the builder's default)."""
        if python_version is not None:
            return cls(({"op": "debian_slim", "python_version": str(python_version)},))
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        return cls(({"op": "debian_slim", "client_python": here},))

    @classmethod
    def from_registry(
        cls, tag: str, *, add_python: str | None = None, secret: Secret | None = None
    ) -> Image:
        """An image from an OCI/Docker registry (``python:3.11-slim`` is Docker
        Hub's). ``secret``: a named secret with ``REGISTRY_USERNAME`` and
        ``REGISTRY_PASSWORD`` for a private registry."""
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidError(f"from_registry takes an image reference, got {tag!r}")
        return cls(
            (
                {
                    "op": "from_registry",
                    "tag": tag.strip(),
                    **_options(add_python=add_python, secret=_secret_name(secret)),
                },
            )
        )

    @classmethod
    def from_dockerfile(
        cls,
        path: str | os.PathLike[str],
        *,
        context_dir: str | os.PathLike[str] | None = None,
        build_args: dict[str, str] | None = None,
    ) -> Image:
        """An image built from a Dockerfile (its ``FROM`` a registry image).
        At deploy the Dockerfile's text and its context (``context_dir``, by
        default the Dockerfile's directory, less what ``.dockerignore``
        lists) are sent, the files by content hash as ``add_local_file``'s."""
        context = _abs(context_dir) if context_dir is not None else None
        return cls(
            (
                {
                    "op": "from_dockerfile",
                    "path": _abs(path),
                    **_options(
                        context_dir=context, build_args=dict(build_args) if build_args else None
                    ),
                },
            )
        )

    # ------------------------------------------------------------ packages

    def pip_install(
        self,
        *packages: str | Sequence[str],
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
        pre: bool = False,
        extra_options: str = "",
    ) -> Image:
        return self._pip_step(
            "pip_install", packages, index_url, extra_index_url, find_links, pre, extra_options
        )

    def uv_pip_install(
        self,
        *packages: str | Sequence[str],
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
        pre: bool = False,
        extra_options: str = "",
    ) -> Image:
        return self._pip_step(
            "uv_pip_install", packages, index_url, extra_index_url, find_links, pre, extra_options
        )

    def _pip_step(
        self,
        op: str,
        packages: tuple[str | Sequence[str], ...],
        index_url: str | None,
        extra_index_url: str | None,
        find_links: str | None,
        pre: bool,
        extra_options: str,
    ) -> Image:
        # pip and uv take the same options; the builder runs both with pip.
        return self._then(
            {
                "op": op,
                "packages": _flatten(op, packages),
                **_options(
                    index_url=index_url,
                    extra_index_url=extra_index_url,
                    find_links=find_links,
                    pre=pre,
                    extra_options=extra_options,
                ),
            }
        )

    def pip_install_from_requirements(
        self,
        requirements_txt: str | os.PathLike[str],
        *,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
        pre: bool = False,
    ) -> Image:
        return self._then(
            {
                "op": "pip_install_from_requirements",
                "path": _abs(requirements_txt),
                **_options(
                    index_url=index_url,
                    extra_index_url=extra_index_url,
                    find_links=find_links,
                    pre=pre,
                ),
            }
        )

    def apt_install(self, *packages: str | Sequence[str]) -> Image:
        return self._then({"op": "apt_install", "packages": _flatten("apt_install", packages)})

    def run_commands(self, *commands: str | Sequence[str]) -> Image:
        return self._then({"op": "run_commands", "commands": _flatten("run_commands", commands)})

    # ------------------------------------------------------------ environment

    def env(self, vars: dict[str, str]) -> Image:
        bad = {k: v for k, v in vars.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise InvalidError(f"Image.env takes str -> str, got {bad!r}")
        return self._then({"op": "env", "vars": dict(vars)})

    def workdir(self, path: str) -> Image:
        if not path.startswith("/"):
            raise InvalidError(f"Image.workdir takes an absolute path, got {path!r}")
        return self._then({"op": "workdir", "path": path})

    # ------------------------------------------------------------ local files

    def add_local_dir(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        copy: bool = False,
        ignore: Sequence[str] = (),
    ) -> Image:
        return self._then(
            {
                "op": "add_local_dir",
                "local_path": _abs(local_path),
                "remote_path": remote_path,
                **_options(copy=copy, ignore=list(ignore)),
            }
        )

    def add_local_file(
        self, local_path: str | os.PathLike[str], remote_path: str, *, copy: bool = False
    ) -> Image:
        return self._then(
            {
                "op": "add_local_file",
                "local_path": _abs(local_path),
                "remote_path": remote_path,
                **_options(copy=copy),
            }
        )

    def add_local_python_source(self, *modules: str, copy: bool = False) -> Image:
        return self._then(
            {
                "op": "add_local_python_source",
                "modules": _flatten("add_local_python_source", modules),
                **_options(copy=copy),
            }
        )

    # ------------------------------------------------------------ imports

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """``with image.imports(): import torch``: the imports the image provides.

        Outside a container a missing package is fine (the code that needs it
        runs remotely); inside one, an ImportError is a real error."""
        try:
            yield
        except ImportError:
            if not is_local():
                raise


# ---------------------------------------------------------------- local files at deploy

# Where add_local_python_source puts modules in the image.
PYTHON_SOURCE_ROOT = "/root"
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", "venv", "node_modules"})


def _in_image(path: str) -> str:
    """An image path made absolute and normalised (relative ones are under /)."""
    return posixpath.normpath(posixpath.join("/", path))


def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    parts = rel.split("/")
    return any(
        fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch(part, p) for part in parts) for p in patterns
    )


def _tree(root: Path, dest: str, ignore: Sequence[str] = ()) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_DIRS and not _ignored(os.path.normpath(f"{rel_dir}/{d}"), ignore)
        )
        for name in sorted(filenames):
            rel = os.path.normpath(f"{rel_dir}/{name}")
            path = Path(dirpath) / name
            if _ignored(rel, ignore) or not path.is_file():
                continue
            found.append((_in_image(posixpath.join(dest, rel.replace(os.sep, "/"))), path))
    return found


def local_files(step: Step) -> list[tuple[str, Path]]:
    """``(path in the image, local path)`` of every file an ``add_local_*``
    step adds; [] for other steps. Raises InvalidError for what is missing."""
    match step["op"]:
        case "add_local_file":
            local = Path(step["local_path"])
            if not local.is_file():
                raise InvalidError(f"add_local_file: no such file {local}")
            remote: str = step["remote_path"]
            dest = remote + local.name if remote.endswith("/") else remote
            return [(_in_image(dest), local)]
        case "add_local_dir":
            local = Path(step["local_path"])
            if not local.is_dir():
                raise InvalidError(f"add_local_dir: no such directory {local}")
            return _tree(local, step["remote_path"], step.get("ignore", ()))
        case "add_local_python_source":
            files: list[tuple[str, Path]] = []
            for module in step["modules"]:
                files.extend(_module_files(module))
            return files
    return []


def _module_files(module: str) -> list[tuple[str, Path]]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        raise InvalidError(f"add_local_python_source: cannot find the source of module {module!r}")
    dest = posixpath.join(PYTHON_SOURCE_ROOT, *module.split("."))
    if spec.submodule_search_locations:  # a package: its whole directory
        return _tree(Path(next(iter(spec.submodule_search_locations))), dest, ("*.pyc",))
    return [(_in_image(dest + ".py"), Path(spec.origin))]  # type: ignore[arg-type]


def dockerfile_context(step: Step) -> tuple[str, list[tuple[str, Path]]]:
    """A ``from_dockerfile`` step's Dockerfile text, and ``("/" + path in the
    context, local path)`` of each file of its build context."""
    path = Path(step["path"])
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidError(f"from_dockerfile: cannot read {path}: {e.strerror}") from None
    context = Path(step.get("context_dir") or path.parent)
    if not context.is_dir():
        raise InvalidError(f"from_dockerfile: no such context directory {context}")
    ignore: list[str] = []
    with contextlib.suppress(OSError):
        for line in (context / ".dockerignore").read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "!")):
                ignore.append(line.strip("/"))
    return text, _tree(context, "/", ignore)
