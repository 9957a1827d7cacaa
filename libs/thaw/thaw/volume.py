"""``thaw.Volume``: a named, persistent directory mounted into containers.

For now a Volume only records its name into the spec
(``experimental_options["volumes"] = {mount_path: name}``); ``commit()`` and
``reload()`` are no-ops until the volumes service lands.
"""

from __future__ import annotations

from thaw_core.schema import check_name

from thaw.exception import InvalidError


class Volume:
    def __init__(self, name: str, *, create_if_missing: bool = False) -> None:
        try:
            self.name = check_name("volume", name)
        except ValueError as e:
            raise InvalidError(str(e)) from None
        self.create_if_missing = create_if_missing

    @classmethod
    def from_name(
        cls, name: str, *, create_if_missing: bool = False, environment_name: str | None = None
    ) -> Volume:
        return cls(name, create_if_missing=create_if_missing)

    def commit(self) -> None:
        """Make this container's writes visible to others (no-op for now)."""

    def reload(self) -> None:
        """See others' committed writes (no-op for now)."""

    def __repr__(self) -> str:
        return f"Volume.from_name({self.name!r})"


def volume_mounts(volumes: dict[str, Volume]) -> dict[str, str]:
    """``{"/data": Volume}`` -> ``{"/data": "name"}``, with the paths checked."""
    mounts: dict[str, str] = {}
    for path, volume in volumes.items():
        path = str(path)
        if not path.startswith("/") or path == "/":
            raise InvalidError(f"volume mount path must be absolute and not '/', got {path!r}")
        if not isinstance(volume, Volume):
            raise InvalidError(f"volumes maps paths to thaw.Volume, got {volume!r} at {path!r}")
        mounts[path.rstrip("/")] = volume.name
    return mounts
