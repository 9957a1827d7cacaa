"""What a deploy's volume mounts need: each volume exists (made first when
the mount says ``create_if_missing``); and how the volumes service's
refusals become HTTP errors."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from thaw_core.schema import FunctionSpec
from thaw_core.volumes import VolumeError, VolumesClient

from thaw_gateway.bodies import checked_name
from thaw_gateway.errors import ApiError, bad_request
from thaw_gateway.state import Gateway

_STATUS = {
    "bad_request": (400, "bad_request"),
    "not_found": (404, "not_found"),
    "conflict": (409, "conflict"),
    "too_large": (413, "payload_too_large"),
}


def _good_mount_path(path: str) -> bool:
    return path.startswith("/") and path != "/" and posixpath.normpath(path) == path


def client(gw: Gateway) -> VolumesClient:
    return VolumesClient(gw.bus, gw.blob)


def api_error(e: VolumeError) -> ApiError:
    status, code = _STATUS.get(e.code, (500, "internal"))
    return ApiError(status, code, e.message)


async def check_deploy_volumes(gw: Gateway, functions: Sequence[FunctionSpec]) -> None:
    """Refuse a deploy whose functions mount a volume that does not exist
    (made first when the mount says ``create_if_missing``), naming each."""
    problems: list[str] = []
    for spec in functions:
        for mount in spec.volumes:
            if not _good_mount_path(mount.path):
                problems.append(
                    f"{spec.name}: volume mount path {mount.path!r} must be absolute, not '/',"
                    " without '..' or '.' parts"
                )
                continue
            try:
                checked_name("volume", mount.name)
                await client(gw).ensure(mount.name, create_if_missing=mount.create_if_missing)
            except VolumeError as e:
                problems.append(f"{spec.name}: volume {mount.name!r} at {mount.path}: {e.message}")
            except ApiError as e:
                problems.append(f"{spec.name}: {e.message}")
        paths = [m.path for m in spec.volumes]
        for path in sorted({p for p in paths if paths.count(p) > 1}):
            problems.append(f"{spec.name}: two volumes mounted at {path}")
    if problems:
        raise bad_request("cannot deploy: " + "; ".join(problems))
