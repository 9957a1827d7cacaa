"""Images from OCI/Docker registries, through Debian's ``skopeo``.

``resolve`` turns a reference into the platform's manifest (a multi-arch
index is narrowed to this machine's architecture), its layers' digests and
its config, reading only manifests; ``pull`` copies the image's blobs into an
OCI layout on local disk (``skopeo copy``), its progress lines passed on as
they come. References are read as Docker reads them: ``python:3.11-slim`` is
``docker.io/library/python:3.11-slim``, ``me/app`` is
``docker.io/me/app:latest``; a first component with a ``.`` or ``:`` (or
``localhost``) is a registry host. Registries on loopback addresses, and
those in ``THAW_BUILDER_INSECURE_REGISTRIES`` (comma-separated hosts), are
reached over plain HTTP, as Docker's default ``insecure-registries`` do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thaw_core.private_file import write_private

DOCKER_HUB = "docker.io"
INSECURE_ENV = "THAW_BUILDER_INSECURE_REGISTRIES"
_POLICY = Path("/etc/containers/policy.json")
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
INSPECT_TIMEOUT_S = 120.0


class RegistryError(Exception):
    """The image cannot be had from its registry; the message says why, naming it."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str = "latest"
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"

    def at(self, digest: str) -> Reference:
        return Reference(self.host, self.repository, self.tag, digest)

    @property
    def insecure(self) -> bool:
        host = self.host.rsplit(":", 1)[0].strip("[]")
        extra = {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}
        if self.host in extra or host in extra or host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def parse_reference(text: str) -> Reference:
    """A registry reference as Docker reads it (see the module docstring)."""
    ref = text.strip()
    if not ref or any(c.isspace() for c in ref) or ref.startswith(("/", "-")):
        raise RegistryError(f"{text!r} is not an image reference")
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RegistryError(f"{text!r}: the digest must be sha256:<64 hex digits>")
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
        if not _TAG.match(tag):
            raise RegistryError(f"{text!r}: {tag!r} is not a valid tag")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = DOCKER_HUB, name
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if repository != repository.lower() or not re.fullmatch(r"[a-z0-9._/-]+", repository):
        raise RegistryError(f"{text!r}: repository names are lowercase letters, digits, ._-/")
    return Reference(host, repository, tag, digest)


@dataclass(frozen=True)
class RegistryLayer:
    digest: str  # "sha256:..." of the compressed blob
    media_type: str
    size: int


@dataclass(frozen=True)
class ImageConfig:
    """What the image's config says about running it."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, config: dict[str, Any]) -> ImageConfig:
        c = config.get("config") or {}
        env: dict[str, str] = {}
        for item in c.get("Env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
        return cls(
            env=env,
            workdir=c.get("WorkingDir") or "/",
            user=c.get("User") or "",
            entrypoint=list(c.get("Entrypoint") or []),
            cmd=list(c.get("Cmd") or []),
            labels=dict(c.get("Labels") or {}),
            exposed_ports=sorted(c.get("ExposedPorts") or {}),
        )


@dataclass(frozen=True)
class RegistryImage:
    reference: Reference  # pinned to the platform manifest's digest
    layers: list[RegistryLayer]
    config: ImageConfig


def platform_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


class Skopeo:
    """Runs ``skopeo`` with a reference's TLS setting and the credentials given."""

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials

    @contextlib.contextmanager
    def _common(self, ref: Reference, flag: str) -> Iterator[list[str]]:
        """skopeo's TLS and credential options for ``ref``. The credentials go
        in a 0600 auth file for the command's life, never on its command line
        (which every local user reads in /proc)."""
        args = [f"--{flag}tls-verify={'false' if ref.insecure else 'true'}"]
        if self.credentials is None:
            yield args
            return
        pair = f"{self.credentials.username}:{self.credentials.password}"
        auths = {"auths": {ref.host: {"auth": base64.b64encode(pair.encode()).decode()}}}
        with tempfile.TemporaryDirectory(prefix="thaw-skopeo-") as tmp:
            authfile = Path(tmp) / "auth.json"
            write_private(authfile, json.dumps(auths))
            yield [*args, f"--{flag}authfile={authfile}"]

    @staticmethod
    def _binary() -> list[str]:
        found = shutil.which("skopeo")
        if found is None:
            raise RegistryError("skopeo is not installed on the builder: run `make setup`")
        return [found] if _POLICY.exists() else [found, "--insecure-policy"]

    async def inspect(self, ref: Reference, *, config: bool = False) -> bytes:
        with self._common(ref, "") as common:
            argv = [*self._binary(), "inspect", "--raw", *common]
            if config:
                argv.append("--config")
            out, err, code = await _run([*argv, f"docker://{ref}"], INSPECT_TIMEOUT_S)
        if code != 0:
            raise RegistryError(_explain(ref, err, self.credentials is not None))
        return out

    async def copy(
        self, ref: Reference, layout: Path, on_line: Callable[[str], None], timeout_s: float
    ) -> None:
        with self._common(ref, "src-") as common:
            argv = [*self._binary(), "copy", *common, f"docker://{ref}", f"oci:{layout}:image"]
            await self._copy(ref, argv, on_line, timeout_s)

    async def _copy(
        self, ref: Reference, argv: list[str], on_line: Callable[[str], None], timeout_s: float
    ) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []

        async def pump(stream: asyncio.StreamReader, keep: list[str] | None) -> None:
            while line := await stream.readline():
                text = line.decode(errors="replace").rstrip()
                if keep is not None:
                    keep.append(text)
                on_line(text)

        try:
            await asyncio.wait_for(
                asyncio.gather(pump(proc.stdout, None), pump(proc.stderr, errors), proc.wait()),
                timeout_s,
            )
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RegistryError(_explain(ref, "\n".join(errors), self.credentials is not None))


async def _run(argv: Sequence[str], timeout_s: float) -> tuple[bytes, str, int]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return b"", f"no answer in {timeout_s:g}s", 1
    return out, err.decode(errors="replace"), proc.returncode or 0


def _explain(ref: Reference, stderr: str, had_credentials: bool) -> str:
    """skopeo's failure as a sentence naming the image."""
    said = stderr.strip().splitlines()[-1] if stderr.strip() else "skopeo failed"
    said = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", said).replace('\\"', '"')
    low = said.lower()
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        if had_credentials:
            return f"image {ref}: the registry refused the credentials given ({said})"
        return (
            f"image {ref}: the registry needs credentials: pass "
            "secret=thaw.Secret.from_name(...) holding REGISTRY_USERNAME and REGISTRY_PASSWORD "
            f"({said})"
        )
    if "manifest unknown" in low or "not found" in low or "name unknown" in low:
        return f"image {ref}: no such image or tag in its registry ({said})"
    return f"image {ref}: {said}"


async def resolve(text: str, skopeo: Skopeo, *, arch: str | None = None) -> RegistryImage:
    """The platform image ``text`` names now: its manifest digest, layers and config."""
    ref = parse_reference(text)
    arch = arch or platform_arch()
    raw = await skopeo.inspect(ref)
    manifest = _json(ref, raw)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if manifest.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
        digest = _pick_platform(ref, manifest, arch)
        raw = await skopeo.inspect(ref.at(digest))
        manifest = _json(ref, raw)
    if manifest.get("schemaVersion") != 2 or "layers" not in manifest:
        raise RegistryError(
            f"image {ref}: a schema {manifest.get('schemaVersion')} manifest, which thaw "
            "does not read (push it again with a current client)"
        )
    pinned = ref.at(digest)
    config = ImageConfig.parse(_json(ref, await skopeo.inspect(pinned, config=True)))
    layers = [
        RegistryLayer(d["digest"], d.get("mediaType", ""), int(d.get("size", 0)))
        for d in manifest["layers"]
    ]
    return RegistryImage(pinned, layers, config)


def _json(ref: Reference, raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise RegistryError(f"image {ref}: the registry's answer is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise RegistryError(f"image {ref}: the registry's answer is not a manifest")
    return value


def _pick_platform(ref: Reference, index: dict[str, Any], arch: str) -> str:
    found: list[str] = []
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        found.append(f"{p.get('os', '?')}/{p.get('architecture', '?')}")
        if p.get("os", "linux") == "linux" and p.get("architecture") == arch:
            return str(m["digest"])
    raise RegistryError(
        f"image {ref} has no linux/{arch} variant (it has {', '.join(found) or 'none'})"
    )


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest
