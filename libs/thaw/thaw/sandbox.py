"""``thaw.Sandbox``: a container running a command of yours, whose processes
you drive from here (``modal.Sandbox``).

``Sandbox.create`` asks the gateway, which has the scheduler place it on a
node; the node's agent runs it as it runs a function's container (runc, the
same namespaces and limits). Its command is its main process
(``sb.stdin``/``sb.stdout``/``sb.wait()``); ``sb.exec`` starts more
(``thaw.container_process``). A sandbox has outbound network (IPv4, through
a user-mode stack of its own), from which the platform's servers and the
node's own addresses are refused; ``block_network=True`` leaves it only its
own loopback.

Its ``image`` is built by the gateway before it is placed, as at deploy.
``ephemeral_disk=`` (MiB) limits its writable layer as a function's.
Options thaw does not carry out for sandboxes yet are refused by name:
images adding local files or built from a Dockerfile, volumes, GPUs, ports
and tunnels, clouds and regions.
Every method has an ``.aio`` form.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from thaw_core.schema import (
    AddLocalDir,
    AddLocalFile,
    AddLocalPythonSource,
    FromDockerfile,
    FunctionSpec,
)
from thaw_core.schema.sandboxes import (
    MAIN_PROCESS,
    ExecStart,
    ExecStarted,
    SandboxCreated,
    SandboxDescribe,
    SandboxList,
    SandboxSetTags,
    SandboxSpec,
    SandboxState,
    SandboxTerminate,
)

from thaw import exception
from thaw._spec import apply_options, checked_name
from thaw._sync import aio_function, aio_method, background_loop
from thaw.container_process import (
    ContainerProcess,
    StreamReader,
    StreamWriter,
    _expect,
    container_op,
)
from thaw.sandbox_file import SandboxFile

_LOCAL_STEPS = (AddLocalFile, AddLocalDir, AddLocalPythonSource, FromDockerfile)
_NOT_SERVED = (
    "volumes", "network_file_systems", "encrypted_ports", "h2_ports", "unencrypted_ports",
    "cidr_allowlist", "cloud", "region", "proxy", "pty_info", "mounts",
)  # fmt: skip
# Read as a function's options are (``apply_options``), and the sandbox's own.
_AS_FUNCTIONS = ("image", "cpu", "memory", "ephemeral_disk", "timeout", "secrets", "env")
_SERVED = frozenset((*_AS_FUNCTIONS, "idle_timeout", "workdir", "block_network"))


def _app_name(app: Any) -> str:
    if app is None:
        raise exception.InvalidError(
            "Sandbox.create needs app= (thaw.App.lookup(name, create_if_missing=True), or a running app)"
        )
    name = getattr(app, "running_name", None) or getattr(app, "name", None)
    if not name:
        raise exception.InvalidError(f"app= must be a named thaw.App, got {app!r}")
    return checked_name("app", name)


def _spec(command: Sequence[str], app: Any, options: dict[str, Any]) -> SandboxSpec:
    for name in _NOT_SERVED:
        value = options.pop(name, None)
        if value:
            raise exception.InvalidError(f"Sandbox.create({name}=...) is not served by thaw yet")
    if options.pop("gpu", None):
        raise exception.InvalidError("Sandbox.create(gpu=...) is not served by thaw yet")
    if any(not isinstance(arg, str) for arg in command):
        raise exception.InvalidError(f"a sandbox's command is strings, got {list(command)!r}")
    unknown = sorted(set(options) - _SERVED)
    if unknown:
        # Dropping them would run the sandbox without what was asked.
        raise exception.InvalidError(f"Sandbox.create: unknown options {', '.join(unknown)}")
    base = FunctionSpec(name="sandbox", module="", qualname="")
    fspec = apply_options(base, {k: options[k] for k in _AS_FUNCTIONS if k in options})
    if fspec.image is not None and any(isinstance(s, _LOCAL_STEPS) for s in fspec.image.steps):
        raise exception.InvalidError(
            "Sandbox.create(image=...) with local files or a Dockerfile (add_local_*,"
            " from_dockerfile) is not served by thaw yet: deploy a function with that image"
        )
    from thaw.deploy import with_local_content

    image = with_local_content(fspec).image  # a requirements file's text
    if any(s.app_scoped for s in fspec.secrets):
        raise exception.InvalidError(
            "a sandbox's secrets are named ones (thaw.Secret.from_name); secrets made from"
            " values here (Secret.from_dict) are not served for sandboxes yet"
        )
    idle = options.get("idle_timeout")
    workdir = options.get("workdir") or "/"
    return SandboxSpec(
        app=_app_name(app),
        command=list(command),
        resources=fspec.resources,
        timeout_s=fspec.timeout_s,
        idle_timeout_s=float(idle) if idle is not None else None,
        workdir=workdir,
        env=fspec.env,
        secrets=fspec.secrets,
        block_network=bool(options.get("block_network")),
        tags={},
        image=image,
    )


class Sandbox:
    """A running sandbox, by id (``object_id``)."""

    def __init__(self, sandbox_id: str) -> None:
        self.object_id = sandbox_id
        self._main: ContainerProcess[str] = ContainerProcess(sandbox_id, MAIN_PROCESS)
        self._returncode: int | None = None

    @property
    def stdout(self) -> StreamReader[str]:
        return self._main.stdout

    @property
    def stderr(self) -> StreamReader[str]:
        return self._main.stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._main.stdin

    @property
    def returncode(self) -> int | None:
        """Its command's exit code once it ended (as ``wait()``/``poll()`` saw); None before."""
        return self._returncode

    @aio_method
    async def exec(
        self,
        *cmd: str,
        workdir: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        pty: bool = False,
        text: bool = True,
        **unsupported: Any,
    ) -> ContainerProcess[Any]:
        """Run ``cmd`` in the sandbox; its process (streams, ``wait()``)."""
        for name, value in unsupported.items():
            if value:
                raise exception.InvalidError(f"Sandbox.exec({name}=...) is not served by thaw yet")
        if not cmd or any(not isinstance(c, str) for c in cmd):
            raise exception.InvalidError(f"exec needs a command of strings, got {list(cmd)!r}")
        op = ExecStart(
            argv=list(cmd), workdir=workdir or "", env=dict(env or {}),
            timeout_s=float(timeout) if timeout is not None else None, tty=pty,
        )  # fmt: skip
        started: ExecStarted = _expect(await container_op(self.object_id, op), ExecStarted)
        return ContainerProcess(self.object_id, started.process_id, text=text)

    @aio_method
    async def wait(self, raise_on_termination: bool = True) -> None:
        """Until its command exits, or it is terminated or times out:
        ``SandboxTimeoutError`` says it timed out, ``SandboxTerminatedError``
        (with ``raise_on_termination``) that it was terminated."""
        self._returncode = await self._main.wait.aio()
        state = await container_op(self.object_id, SandboxDescribe())
        if not isinstance(state, SandboxState):
            return
        if state.ended_by == "timeout":
            raise exception.SandboxTimeoutError(f"sandbox {self.object_id}: {state.end_reason}")
        if state.ended_by == "terminated" and raise_on_termination:
            raise exception.SandboxTerminatedError(f"sandbox {self.object_id}: {state.end_reason}")

    @aio_method
    async def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        self._returncode = await self._main.poll.aio()
        return self._returncode

    @aio_method
    async def terminate(self) -> None:
        """Kill it; returns once it is gone."""
        await container_op(self.object_id, SandboxTerminate())

    @aio_method
    async def set_tags(self, tags: Mapping[str, str]) -> None:
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in tags.items()):
            raise exception.InvalidError(f"tags map strings to strings, got {dict(tags)!r}")
        await container_op(self.object_id, SandboxSetTags(tags=dict(tags)))

    @aio_method
    async def get_tags(self) -> dict[str, str]:
        state: SandboxState = _expect(
            await container_op(self.object_id, SandboxDescribe()), SandboxState
        )
        return dict(state.tags)

    @aio_method
    async def open(self, path: str, mode: str = "r") -> SandboxFile:
        """A file in the sandbox, read or written through ``cat`` run in it."""
        return await SandboxFile.open(self, path, mode)

    def __repr__(self) -> str:
        return f"Sandbox({self.object_id})"


async def _create(*cmd: str, app: Any = None, **options: Any) -> Sandbox:
    from thaw.client import current

    spec = _spec(cmd, app, dict(options))
    created = await current().json_request(
        "POST", "/v1/sandboxes", SandboxCreated, "a sandbox", body=spec
    )
    return Sandbox(created.sandbox_id)


async def _from_id(sandbox_id: str) -> Sandbox:
    state = await container_op(sandbox_id, SandboxDescribe())
    if not isinstance(state, SandboxState) or not state.sandbox:
        raise exception.NotFoundError(f"{sandbox_id} is not a sandbox")
    sb = Sandbox(sandbox_id)
    sb._returncode = state.returncode
    return sb


async def _list(
    *, app_id: str | None = None, tags: Mapping[str, str] | None = None
) -> AsyncIterator[Sandbox]:
    from thaw.client import current

    query: list[tuple[str, str]] = [("app", app_id)] if app_id else []
    query += [("tag", f"{k}={v}") for k, v in (tags or {}).items()]
    path = "/v1/sandboxes" + (f"?{urlencode(query)}" if query else "")
    listing = await current().json_request("GET", path, SandboxList, "the sandboxes")
    for state in listing.sandboxes:
        yield Sandbox(state.container_id)


class _ListIterator:
    """``Sandbox.list(...)``: iterated, or ``async for`` over ``.aio(...)``."""

    def __call__(self, **kwargs: Any) -> builtins.list[Sandbox]:
        return builtins.list(background_loop().iterate(_list(**kwargs)))

    def aio(self, **kwargs: Any) -> AsyncIterator[Sandbox]:
        return _list(**kwargs)


Sandbox.create = aio_function(_create)  # type: ignore[attr-defined]
Sandbox.from_id = aio_function(_from_id)  # type: ignore[attr-defined]
Sandbox.list = _ListIterator()  # type: ignore[attr-defined]
