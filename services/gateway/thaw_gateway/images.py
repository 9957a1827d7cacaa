"""Images at deploy: every function's image is built (or found built) before
the deploy is recorded, and its id stored in the function's spec
(``spec.image.image_id``), so that ``StartContainer.spec`` tells the agent
which image to mount.

Per distinct image of a deploy: ``ImageLookup`` on ``thaw.builder.lookup``
(request/reply); when it is not built, a ``BuildRequest`` on
``thaw.build.request`` and a wait for ``thaw.build.result.<build_id>``, while
the build's ``thaw.build.log.<build_id>`` messages are handed to ``emit`` (the
deploy's NDJSON stream). The lookup comes first so that deploying an image
that is built never waits behind other builds in the builder's queue.

A function with no image, or the bare ``Image.debian_slim()`` deployed from a
client on thaw's own Python, needs no build: it runs on the node's default
rootfs, as before images existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
from thaw_core import contract, dockerfile, secrets_grant
from thaw_core.api import ImageBuildStarted
from thaw_core.dockerfile import DockerfileError
from thaw_core.schema import (
    BuildOutput,
    BuildProgress,
    BuildRequest,
    BuildResult,
    DebianSlim,
    FromDockerfile,
    FromRegistry,
    FunctionSpec,
    ImageLookup,
    ImageLookupReply,
    ImageRef,
    ImageSpec,
    ImageStep,
    SecretRef,
    SecretsGrant,
)

from thaw_gateway.errors import ApiError, bad_request, gateway_timeout
from thaw_gateway.state import Gateway

log = logging.getLogger("thaw.gateway")

LOOKUP_TIMEOUT_S = 10.0
# A build (pip installing torch, say) may take long; a deploy waits that long.
BUILD_TIMEOUT_S = 3600.0
_OWN_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_LOG_TAIL_LINES = 20

Emit = Callable[[msgspec.Struct], Awaitable[None]]

_lookup_reply = msgspec.json.Decoder(ImageLookupReply)
_build_message = msgspec.json.Decoder(BuildProgress | BuildOutput | BuildResult)


class BuildFailed(ApiError):
    """An image build failed: 400 with the step, its exit code and log tail."""

    def __init__(self, functions: list[str], result: BuildResult) -> None:
        super().__init__(400, "bad_request", failure_message(functions, result))
        self.result = result


def needs_build(image: ImageRef | None) -> bool:
    if image is None:
        return False
    match image.steps:
        case [] | [DebianSlim(python_version=None, client_python=None)]:
            return False
        case [DebianSlim(python_version=None, client_python=wanted)]:
            # A client on thaw's own Python gets the default rootfs (which has
            # it, the agent's packages being built for it); another one, the
            # builder's base of its version where there is one.
            return wanted != _OWN_PYTHON
    return True


def step_label(step: dict[str, Any]) -> str:
    """A short description of one step for progress output: ``pip_install six``."""
    op = step.get("op", "?")
    match op:
        case "pip_install" | "uv_pip_install" | "apt_install":
            detail = " ".join(step.get("packages", []))
        case "run_commands":
            detail = " && ".join(step.get("commands", []))
        case "env":
            detail = " ".join(f"{k}=…" for k in step.get("vars", {}))
        case "workdir":
            detail = step.get("path", "")
        case "add_local_file" | "add_local_dir":
            detail = step.get("remote_path", "")
        case "add_local_python_source":
            detail = " ".join(step.get("modules", []))
        case "pip_install_from_requirements":
            detail = step.get("path", "")
        case _:
            detail = step.get("python_version") or step.get("tag") or ""
    return _short(f"{op} {detail}".strip())


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:79] + "…"


def step_labels(steps: list[ImageStep]) -> list[str]:
    """One label per step the build reports: a Dockerfile's instructions one each."""
    labels: list[str] = []
    for step in steps:
        if isinstance(step, FromDockerfile) and step.dockerfile is not None:
            with contextlib.suppress(DockerfileError):  # the builder says what is wrong
                labels += [_short(i.label) for i in dockerfile.parse(step.dockerfile)]
                continue
        labels.append(step_label(msgspec.to_builtins(step)))
    return labels


def failure_message(functions: list[str], result: BuildResult) -> str:
    where = ", ".join(functions)
    message = f"image of {where}: {result.error or 'build failed'}"
    if result.exit_code is not None and f"code {result.exit_code}" not in message:
        message += f" (exit code {result.exit_code})"
    tail = result.log_tail[-_LOG_TAIL_LINES:]
    if tail:
        message += "\n" + "\n".join(tail)
    return message


@dataclass
class _Image:
    """One distinct image of a deploy and the functions that run on it."""

    spec: ImageSpec
    functions: list[str] = field(default_factory=list)
    image_id: str = ""


async def resolve_images(
    gw: Gateway, app: str, functions: list[FunctionSpec], emit: Emit
) -> list[FunctionSpec]:
    """``functions`` with each image's id filled in, building what is not built.
    Raises ``BuildFailed`` (or another ``ApiError``) when an image cannot be had."""
    images: dict[bytes, _Image] = {}
    for spec in functions:
        if not needs_build(spec.image):
            continue
        assert spec.image is not None
        build = spec.image.build_spec()
        key = msgspec.json.encode(build, order="sorted")
        if key not in images:
            images[key] = _Image(spec=build)
        images[key].functions.append(spec.name)
    if not images:
        return functions
    outcomes = await asyncio.gather(
        *(_resolve_one(gw, app, image, emit) for image in images.values()),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    by_name = {fn: image.image_id for image in images.values() for fn in image.functions}
    return [
        msgspec.structs.replace(
            spec, image=msgspec.structs.replace(spec.image, image_id=by_name[spec.name])
        )
        if spec.name in by_name and spec.image is not None
        else spec
        for spec in functions
    ]


async def _resolve_one(gw: Gateway, app: str, image: _Image, emit: Emit) -> None:
    labels = step_labels(image.spec.steps)
    reply = await _lookup(gw, image)
    if reply.built:
        image.image_id = reply.image_id
        # Built before: say so in the same terms as a build (every step cached).
        await emit(ImageBuildStarted(build_id="", functions=image.functions, steps=labels))
        await emit(
            BuildResult(build_id="", ok=True, image_id=reply.image_id, cached_steps=len(labels))
        )
        return
    build_id = "b-" + uuid.uuid4().hex[:16]
    await emit(ImageBuildStarted(build_id=build_id, functions=image.functions, steps=labels))
    result = await _build(gw, app, image, build_id, emit)
    if not result.ok:
        raise BuildFailed(image.functions, result)
    image.image_id = result.image_id


async def _lookup(gw: Gateway, image: _Image) -> ImageLookupReply:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOOKUP_TIMEOUT_S
    while True:
        try:
            msg = await gw.bus.request(
                contract.IMAGE_LOOKUP, ImageLookup(image=image.spec), timeout_s=LOOKUP_TIMEOUT_S
            )
            break
        except nats.errors.NoRespondersError:
            # A builder starting with the platform (thaw up) answers soon.
            if loop.time() < deadline:
                await asyncio.sleep(0.25)
                continue
            raise _no_builder(image) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise gateway_timeout(
                f"the image builder did not answer a lookup within {LOOKUP_TIMEOUT_S:g}s"
            ) from None
    reply = _lookup_reply.decode(msg.data)
    if reply.error:
        raise bad_request(f"image of {', '.join(image.functions)}: {reply.error}")
    return reply


def _no_builder(image: _Image) -> ApiError:
    return ApiError(
        500,
        "internal",
        f"the image of {', '.join(image.functions)} needs building and no image builder "
        "is running (start thaw_builder, or `thaw up`)",
    )


def _registry_grant(gw: Gateway, app: str, image: _Image, build_id: str) -> SecretsGrant | None:
    """The builder's leave to fetch the registry secret the base step names
    (as its ``thaw_builder.secrets`` asks for it), and no other."""
    base = image.spec.steps[0] if image.spec.steps else None
    secret = base.secret if isinstance(base, FromRegistry | FromDockerfile) else None
    return secrets_grant.issue(
        gw.grant_key,
        node_id="",
        app=app,
        function=(image.functions or [""])[0],  # as the builder reads requested_by
        container_id=build_id,
        secrets=[SecretRef(name=secret)] if secret else [],
    )


async def _build(gw: Gateway, app: str, image: _Image, build_id: str, emit: Emit) -> BuildResult:
    # Subscribed before the request leaves (same connection, so the server has
    # the SUB first): no progress line or result can be missed.
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(msg: Any) -> None:
        queue.put_nowait(msg.data)

    subs = [
        await gw.bus.subscribe(contract.build_log_subject(build_id), on_message),
        await gw.bus.subscribe(contract.build_result_subject(build_id), on_message),
    ]
    try:
        await gw.bus.publish(
            contract.BUILD_REQUEST,
            BuildRequest(
                build_id=build_id,
                image=image.spec,
                requested_by=f"{app}/{','.join(image.functions)}",
                secrets_grant=_registry_grant(gw, app, image, build_id),
            ),
        )
        log.info("image build requested", extra={"app": app, "build_id": build_id})
        deadline = asyncio.get_running_loop().time() + BUILD_TIMEOUT_S
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                data = await asyncio.wait_for(queue.get(), max(0.0, remaining))
            except TimeoutError:
                raise gateway_timeout(
                    f"build {build_id} of the image of {', '.join(image.functions)} did not "
                    f"finish within {BUILD_TIMEOUT_S:g}s"
                ) from None
            try:
                message = _build_message.decode(data)
            except msgspec.DecodeError as e:
                log.warning("skipping a malformed build message of %s: %s", build_id, e)
                continue
            await emit(message)
            if isinstance(message, BuildResult):
                return message
    finally:
        for sub in subs:
            await sub.unsubscribe()
