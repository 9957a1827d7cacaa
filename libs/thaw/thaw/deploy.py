"""Deploying apps: the bundle, the upload, the deploy request; ``app.run()``'s
ephemeral deploys; importing a user's file the way the container will.

A file is imported under its module name (``app`` for ``app.py``, the dotted
name from the package root for a file inside a package), never as
``__main__``, so that the container can import the very same name from the bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import re
import secrets
import sys
import warnings
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Generic, TypeVar
from urllib.parse import quote

import msgspec
from thaw_core.api import (
    DeployEvent,
    DeployFailed,
    DeployFinished,
    DeployRequest,
    DeployResponse,
)
from thaw_core.schema import (
    DebianSlim,
    FileEntry,
    FromDockerfile,
    FunctionSpec,
    ImageStep,
    PipInstallFromRequirements,
)

from thaw._app_ref import DeployableApp
from thaw._env import is_local
from thaw._output import output_enabled
from thaw._reconnect import Reconnect
from thaw._sync import background_loop
from thaw.build_progress import BuildDisplay
from thaw.bundle import Bundle, build_bundle, import_root
from thaw.client import current, gateway_error
from thaw.exception import AlreadyExistsError, ConnectionError, Error, InvalidError, from_gateway
from thaw.image import dockerfile_context, local_files
from thaw.secret import store_local_values

# ---------------------------------------------------------------- importing


def import_source(ref: str) -> ModuleType:
    """Import ``app.py`` / ``dir/app.py`` (a path) or ``pkg.app`` (a module name)."""
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise InvalidError(f"no such file: {ref}")
        root, name = import_root(path)
    else:
        root, name = Path.cwd(), ref
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name.split(".")[0] or e.name == name:
            raise InvalidError(
                f"cannot import {ref!r}: no module named {e.name!r} under {root}"
            ) from None
        raise


# ---------------------------------------------------------------- bundles


def _module_file(name: str) -> Path:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file is None:
        # A script run directly: its specs name it after its file (thaw._spec.module_name).
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file and import_root(Path(main_file))[1] == name:
            file = main_file
    if file is None:
        raise InvalidError(f"cannot find the source file of module {name!r} to bundle it")
    return Path(file).resolve()


def app_bundle(app: DeployableApp) -> Bundle:
    """The bundle of the sources the app's functions come from."""
    specs = app.specs()
    if not specs:
        raise InvalidError(f"app {app.name or '(unnamed)'} has no functions or classes to deploy")
    roots: dict[Path, str] = {}
    for spec in specs:
        if spec.module == "__main__":
            raise InvalidError(
                f"{spec.qualname} is defined in an interactive session; put the app in a file to deploy it"
            )
        if "<locals>" in spec.qualname:
            raise InvalidError(
                f"{spec.module}.{spec.qualname} is defined inside a function: the container imports "
                f"{spec.module} and finds only what is defined at module level"
            )
        roots.setdefault(import_root(_module_file(spec.module))[0], spec.module)
    if len(roots) > 1:
        where = ", ".join(f"{module} (under {root})" for root, module in roots.items())
        raise InvalidError(
            f"the functions of one app must come from one source tree; found {where}"
        )
    return build_bundle(next(iter(roots)))


def with_local_content(spec: FunctionSpec, uploads: dict[str, Path] | None = None) -> FunctionSpec:
    """The spec with what its image reads from this machine filled in: the
    builder cannot read the deploying machine's files. Done at deploy, not at
    decoration, because containers import the same code without those files.

    ``add_local_*`` steps get ``files`` (destination, sha256, mode of each
    file; ``uploads`` collects sha256 -> local path for the upload), and
    ``pip_install_from_requirements`` the file's text."""
    if spec.image is None:
        return spec
    steps: list[ImageStep] = []
    for step in spec.image.steps:
        if isinstance(step, PipInstallFromRequirements):
            try:
                step = msgspec.structs.replace(step, requirements=Path(step.path).read_text())
            except OSError as e:
                raise InvalidError(
                    f"{spec.name}: cannot read requirements file {step.path}: {e.strerror}"
                ) from None
        elif isinstance(step, FromDockerfile):
            text, context = dockerfile_context(msgspec.to_builtins(step))
            step = msgspec.structs.replace(
                step,
                dockerfile=text,
                files=[_file_entry(dest, path, uploads) for dest, path in context],
            )
        elif found := local_files(msgspec.to_builtins(step)):
            step = msgspec.structs.replace(
                step, files=[_file_entry(dest, path, uploads) for dest, path in found]
            )
        steps.append(step)
    return msgspec.structs.replace(spec, image=msgspec.structs.replace(spec.image, steps=steps))


def _file_entry(dest: str, path: Path, uploads: dict[str, Path] | None) -> FileEntry:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        mode = path.stat().st_mode & 0o7777
    except OSError as e:
        raise InvalidError(f"cannot read {path} to add it to the image: {e.strerror}") from None
    sha = digest.hexdigest()
    if uploads is not None:
        uploads[sha] = path
    return FileEntry(dest=dest, sha256=sha, mode=mode)


async def _upload_files(uploads: dict[str, Path]) -> None:
    """Upload what the gateway does not have yet, as ``files/<sha256>``."""
    client = current()
    limit = asyncio.Semaphore(8)

    async def one(sha: str, path: Path) -> None:
        async with limit:
            status, answer = await client.transport.request("HEAD", f"/v1/files/{sha}")
            if status == 200:
                return
            if status != 404:
                raise gateway_error(status, answer)
            data = await asyncio.to_thread(path.read_bytes)
            status, answer = await client.transport.request(
                "PUT", f"/v1/files/{sha}", data, content_type="application/octet-stream"
            )
            if status not in (200, 201):
                raise gateway_error(status, answer)

    await asyncio.gather(*(one(sha, path) for sha, path in uploads.items()))


def _builds_images(specs: list[FunctionSpec]) -> bool:
    """Whether the deploy may build: an image with steps beyond its base, or
    a base that is not thaw's own."""
    return any(
        spec.image is not None
        and spec.image.steps != []
        and (len(spec.image.steps) > 1 or not isinstance(spec.image.steps[0], DebianSlim))
        for spec in specs
    )


_deploy_event = msgspec.json.Decoder(DeployEvent)


async def _deploy_with_progress(name: str, request: DeployRequest, *, show: bool) -> DeployResponse:
    """The deploy, following its image builds line by line (NDJSON)."""
    client = current()
    body = msgspec.json.encode(request)
    with BuildDisplay(live=None if show else False) as display:
        async for line in client.transport.lines(
            "POST", f"/v1/apps/{quote(name, safe='')}/deploy?progress=1", body
        ):
            try:
                event = _deploy_event.decode(line)
            except msgspec.DecodeError as e:
                raise Error(f"the gateway sent a deploy progress line that cannot be read: {e}")
            match event:
                case DeployFinished(response=response):
                    return response
                case DeployFailed(code=code, message=message):
                    raise from_gateway(400, code, message)
                case _ if show:
                    display.show(event)
    raise Error("the deploy stream ended before the deploy finished; see the gateway's log")


async def deploy_bundle(
    name: str, app: DeployableApp, bundle: Bundle, *, ephemeral: bool
) -> DeployResponse:
    uploads: dict[str, Path] = {}
    specs = [with_local_content(spec, uploads) for spec in app.specs()]
    client = current()
    if not await client.has_bundle(bundle.sha256):
        await client.put_bundle(bundle.sha256, bundle.data)
    await _upload_files(uploads)
    specs = await store_local_values(name, specs)
    request = DeployRequest(bundle_sha256=bundle.sha256, functions=specs, ephemeral=ephemeral)
    if _builds_images(specs):
        # A deploy is shown; an ephemeral run only when its output is on.
        show = not ephemeral or output_enabled()
        response = await _deploy_with_progress(name, request, show=show)
    else:
        response = await client.deploy(name, request)
    for warning in response.warnings or ():  # a function no node can run, ...
        print(f"warning: {warning}", file=sys.stderr)
    return response


def deploy_app(app: DeployableApp, *, name: str | None = None) -> DeployResponse:
    """Deploy ``app`` under ``name`` (its own by default) until it is stopped."""
    target = name or app.name
    if target is None:
        raise InvalidError("this App has no name: give it one (thaw.App('name')) or pass --name")
    return background_loop().run(deploy_bundle(target, app, app_bundle(app), ephemeral=False))


# ---------------------------------------------------------------- ephemeral runs


def run_name(app: DeployableApp) -> str:
    """The name an ephemeral run deploys under: the App's, else its file's."""
    if app.name is not None:
        return app.name
    stem = app.specs()[0].module.rsplit(".", 1)[-1] if app.specs() else "app"
    return (re.sub(r"[^A-Za-z0-9_-]", "-", stem).lstrip("-_") or "app")[:63]


A = TypeVar("A", bound=DeployableApp)


class AppRun(Generic[A]):
    """``with app.run():`` / ``async with app.run():`` (see ``App.run``)."""

    def __init__(self, app: A, *, detach: bool = False, show_logs: bool | None = None) -> None:
        self.app = app
        self.detach = detach
        self.show_logs = output_enabled() if show_logs is None else show_logs
        self.deployed: DeployResponse | None = None
        self._logs: asyncio.Task[None] | None = None
        self._active = False

    def _bundle(self) -> tuple[str, Bundle] | None:
        if not is_local():
            return None  # an app module imported in a container must not deploy itself
        if self.app._running_as is not None:
            raise InvalidError(f"app {self.app.running_name} is already running")
        return run_name(self.app), app_bundle(self.app)

    async def _start(self, name: str, bundle: Bundle) -> None:
        try:
            self.deployed = await deploy_bundle(name, self.app, bundle, ephemeral=True)
        except AlreadyExistsError:
            # A deployed app holds the name (the gateway refuses to replace it):
            # the run gets a name of its own and leaves the deployment alone.
            name = f"{name[:50]}-run-{secrets.token_hex(3)}"
            self.deployed = await deploy_bundle(name, self.app, bundle, ephemeral=True)
        self.app._running_as = name
        self._active = True
        if self.show_logs:
            self._logs = asyncio.create_task(_print_logs(name))

    async def _stop(self) -> None:
        if not self._active:
            return
        self._active = False
        name = self.app._running_as
        self.app._running_as = None
        if self._logs is not None:
            self._logs.cancel()
        if self.detach or name is None:
            return
        try:
            await current().stop_app(name)
        except Error as e:
            # The block's own outcome matters more than this; say it and go on.
            warnings.warn(f"could not stop ephemeral app {name}: {e}", stacklevel=2)

    def __enter__(self) -> A:
        prepared = self._bundle()
        if prepared is not None:
            background_loop().run(self._start(*prepared))
        return self.app

    def __exit__(self, *exc: object) -> None:
        background_loop().run(self._stop())

    async def __aenter__(self) -> A:
        prepared = self._bundle()
        if prepared is not None:
            await background_loop().run_async(self._start(*prepared))
        return self.app

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await background_loop().run_async(self._stop())


async def _print_logs(app: str) -> None:
    """The run's container logs as they come, across gateway restarts: a
    follow that breaks is reopened (``thaw._reconnect``), and since the
    gateway sends the app's stored lines first, as many as were printed
    already are skipped."""
    from thaw._output import print_log_line

    again = Reconnect(f"the logs of {app}", shown=False)
    printed = 0
    with contextlib.suppress(Error):
        while True:
            seen = 0
            try:
                async for line in current().app_logs(app, follow=True):
                    again.ok()
                    seen += 1
                    if seen > printed:
                        print_log_line(line)
                        printed = seen
                return
            except ConnectionError as e:
                await again.failed(e)  # past the reconnect window: no more logs
