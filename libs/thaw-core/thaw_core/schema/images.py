"""Image builds (services/builder): steps, manifests, build requests, progress and results.

An image is the list of steps ``thaw.Image`` records
(``image.spec()["steps"]``), decoded into one Struct per ``op`` so
that a malformed step is refused with its path (``$.image.steps[2].packages``).
Steps that add local files carry what the client uploaded: ``files``, each
file's destination, sha256 (the blob ``files/<sha256>``) and mode;
``pip_install_from_requirements`` carries the file's text in ``requirements``.
The deploying machine's own paths (``local_path``, ``path``) are kept for
messages but are not part of the layer id: the content is.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from thaw_core.schema.base import Message, Spec, now
from thaw_core.schema.secret_grants import SecretsGrant


class LayerRef(Spec):
    layer_id: str
    # sha256 of the compressed tar, stored at thaw_core.layers.blob_key(digest).
    digest: str
    # Size of the compressed tar in bytes.
    size: int
    # "debian_slim" for the base layer: a node whose default rootfs has this
    # layer id uses its rootfs in place of pulling the tar.
    base: str = ""


class ImageManifest(Spec):
    """What a node needs to run a container on an image (stored as JSON by the builder)."""

    image_id: str
    # Base first, top layer last; steps that changed no file are not listed.
    layers: list[LayerRef]
    env: dict[str, str] = {}
    workdir: str = "/"
    python_version: str = ""
    # The image's python3 ("": /usr/bin/python3, as in thaw's own base).
    python: str = ""
    # Recorded from a registry image's config or a Dockerfile, not run:
    # the user its steps ran as, its entrypoint and command, labels, ports.
    user: str = ""
    entrypoint: list[str] = []
    cmd: list[str] = []
    labels: dict[str, str] = {}
    exposed_ports: list[str] = []


class Step(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="op",
    omit_defaults=True,
):
    """One image build step; ``op`` is its tag. Defaults are omitted when
    encoded, as the SDK omits options the user did not set, so a step's
    canonical JSON (and its layer id) is the same on both sides."""


class FileEntry(Spec, omit_defaults=True, kw_only=True):
    """One local file a step adds, uploaded by the client as blob ``files/<sha256>``."""

    dest: str  # absolute path in the image
    sha256: str
    mode: int = 0o644


class DebianSlim(Step, tag="debian_slim", kw_only=True):
    python_version: str | None = None
    # Without python_version: the deploying client's own "major.minor", the
    # version the image gets where the builder has it (else its default).
    client_python: str | None = None


class FromRegistry(Step, tag="from_registry", kw_only=True):
    tag: str
    add_python: str | None = None
    # A named secret with REGISTRY_USERNAME and REGISTRY_PASSWORD, for a
    # private registry (credentials say nothing about the image: not in its id).
    secret: str | None = None


class FromDockerfile(Step, tag="from_dockerfile", kw_only=True):
    path: str
    context_dir: str | None = None
    # The Dockerfile's text and the context files its COPY/ADD read (dest:
    # "/" + the path in the context), sent by the client.
    dockerfile: str | None = None
    build_args: dict[str, str] = {}
    files: list[FileEntry] = []
    add_python: str | None = None
    secret: str | None = None


class _PipOptions(Step, kw_only=True):
    index_url: str | None = None
    extra_index_url: str | None = None
    find_links: str | None = None
    pre: bool = False


class PipInstall(_PipOptions, tag="pip_install", kw_only=True):
    packages: list[str]
    extra_options: str = ""


class UvPipInstall(_PipOptions, tag="uv_pip_install", kw_only=True):
    packages: list[str]
    extra_options: str = ""


class PipInstallFromRequirements(_PipOptions, tag="pip_install_from_requirements", kw_only=True):
    path: str = ""
    # The requirements file's text, sent by the client (the builder cannot read
    # the deploying machine's files).
    requirements: str | None = None


class AptInstall(Step, tag="apt_install", kw_only=True):
    packages: list[str]


class RunCommands(Step, tag="run_commands", kw_only=True):
    commands: list[str]


class Env(Step, tag="env", kw_only=True):
    vars: dict[str, str]


class Workdir(Step, tag="workdir", kw_only=True):
    path: str


class AddLocalFile(Step, tag="add_local_file", kw_only=True):
    local_path: str = ""
    remote_path: str
    copy: bool = False
    files: list[FileEntry] = []


class AddLocalDir(Step, tag="add_local_dir", kw_only=True):
    local_path: str = ""
    remote_path: str
    copy: bool = False
    ignore: list[str] = []
    files: list[FileEntry] = []


class AddLocalPythonSource(Step, tag="add_local_python_source", kw_only=True):
    modules: list[str]
    copy: bool = False
    files: list[FileEntry] = []


ImageStep = (
    DebianSlim
    | FromRegistry
    | FromDockerfile
    | PipInstall
    | UvPipInstall
    | PipInstallFromRequirements
    | AptInstall
    | RunCommands
    | Env
    | Workdir
    | AddLocalFile
    | AddLocalDir
    | AddLocalPythonSource
)


class ImageSpec(Spec):
    """``thaw.Image(...).spec()``'s steps: what the builder builds."""

    steps: list[ImageStep]


class ImageRef(Spec, omit_defaults=True):
    """A function's image (``FunctionSpec.image``): the steps the SDK recorded,
    and the id of the built image, which the gateway fills in at deploy once
    the builder has it and the agent mounts."""

    steps: list[ImageStep]
    image_id: str = ""

    def build_spec(self) -> ImageSpec:
        return ImageSpec(steps=self.steps)


class BuildRequest(Message, tag="build_request"):
    # A subject token (NAME_RE): the log and result subjects end with it.
    build_id: str
    image: ImageSpec
    # Who asked, for the logs: "app/function" or a user name.
    requested_by: str = ""
    # Leave to fetch the base step's registry secret, signed by the gateway
    # (thaw_core.secrets_grant); None when the image names none.
    secrets_grant: SecretsGrant | None = None


StepStatus = Literal["cached", "waiting", "building", "built", "applied", "failed"]


class BuildProgress(Message, tag="build_progress"):
    """One step changed state: ``cached`` (its layer exists), ``waiting``
    (another build is making the same layer), ``building``, ``built``,
    ``applied`` (env/workdir: metadata only), ``failed``."""

    build_id: str
    step: int  # index into image.steps
    op: str
    status: StepStatus
    layer_id: str = ""
    elapsed_s: float = 0.0
    at: float = msgspec.field(default_factory=now)


class BuildOutput(Message, tag="build_output"):
    """Output lines of a step's build container, in order, batched."""

    build_id: str
    step: int
    stream: Literal["stdout", "stderr", "system"]
    lines: list[str]
    at: float = msgspec.field(default_factory=now)


BuildLog = BuildProgress | BuildOutput


class BuildResult(Message, tag="build_result"):
    build_id: str
    ok: bool
    image_id: str = ""
    manifest: ImageManifest | None = None
    # On failure: the step that failed (-1: the request itself), its op, the
    # exit code of its command when one ran, what went wrong, and its last lines.
    failed_step: int = -1
    failed_op: str = ""
    exit_code: int | None = None
    error: str = ""
    log_tail: list[str] = []
    cached_steps: int = 0
    built_steps: int = 0
    elapsed_s: float = 0.0
    at: float = msgspec.field(default_factory=now)


class ImageLookup(Message, tag="image_lookup"):
    """Is this image built? By id, or by spec (the builder computes the id)."""

    image_id: str = ""
    image: ImageSpec | None = None


class ImageLookupReply(Message, tag="image_lookup_reply"):
    image_id: str
    built: bool
    manifest: ImageManifest | None = None
    # Set when the lookup itself was wrong (no id and no spec, an invalid spec).
    error: str = ""
