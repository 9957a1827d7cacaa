"""The builder's wire types: defined in thaw_core.schema (section "images"),
re-exported here under the names the builder uses, plus helpers only the
builder needs.

Subjects:

- ``thaw.build.request``            JetStream BUILD: ``BuildRequest``
- ``thaw.build.log.<build_id>``     JetStream BUILD: ``BuildProgress`` | ``BuildOutput``
- ``thaw.build.result.<build_id>``  JetStream BUILD (msg-id ``build-result-<build_id>``): ``BuildResult``
- ``thaw.builder.lookup``           request/reply: ``ImageLookup`` -> ``ImageLookupReply``
"""

from __future__ import annotations

from typing import Any

import msgspec
from thaw_core.schema import (
    BUILD_REQUEST_SUBJECT as REQUEST_SUBJECT,
)
from thaw_core.schema import (
    IMAGE_LOOKUP_SUBJECT as LOOKUP_SUBJECT,
)
from thaw_core.schema import (
    AddLocalDir,
    AddLocalFile,
    AddLocalPythonSource,
    AptInstall,
    BuildLog,
    BuildOutput,
    BuildProgress,
    BuildRequest,
    BuildResult,
    DebianSlim,
    Env,
    FileEntry,
    FromDockerfile,
    FromRegistry,
    ImageLookup,
    ImageLookupReply,
    ImageSpec,
    ImageStep,
    Message,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    Step,
    StepStatus,
    UvPipInstall,
    Workdir,
    encode,
)
from thaw_core.schema import (
    build_log_subject as log_subject,
)
from thaw_core.schema import (
    build_result_subject as result_subject,
)

__all__ = [
    "BUILDER_WIRE_TYPES",
    "LOOKUP_SUBJECT",
    "REQUEST_SUBJECT",
    "AddLocalDir",
    "AddLocalFile",
    "AddLocalPythonSource",
    "AptInstall",
    "BuildLog",
    "BuildOutput",
    "BuildProgress",
    "BuildRequest",
    "BuildResult",
    "DebianSlim",
    "Env",
    "FileEntry",
    "FromDockerfile",
    "FromRegistry",
    "ImageLookup",
    "ImageLookupReply",
    "ImageSpec",
    "ImageStep",
    "PipInstall",
    "PipInstallFromRequirements",
    "RunCommands",
    "Step",
    "StepStatus",
    "UvPipInstall",
    "Workdir",
    "as_dict",
    "encode",
    "log_subject",
    "result_msg_id",
    "result_subject",
    "salvage_build_id",
]


def result_msg_id(build_id: str) -> str:
    return f"build-result-{build_id}"


class _BuildIdOnly(msgspec.Struct):
    """What a refused request may still say: where to send its failure."""

    build_id: str = ""


BUILDER_WIRE_TYPES: tuple[type[Message], ...] = (
    BuildRequest,
    BuildProgress,
    BuildOutput,
    BuildResult,
    ImageLookup,
    ImageLookupReply,
)


def salvage_build_id(data: bytes) -> str:
    """The build id of a request that failed to decode, or "" when it has none."""
    try:
        return msgspec.json.decode(data, type=_BuildIdOnly).build_id
    except msgspec.DecodeError:
        return ""


def as_dict(step: ImageStep) -> dict[str, Any]:
    return msgspec.to_builtins(step)
