"""Paths inside a volume: relative to its root, '/'-separated, never climbing
out of it. A leading '/' means the volume's root (``/data/x`` in a put is the
volume's ``data/x``), as the hosted platform reads it."""

from __future__ import annotations


class VolumePathError(ValueError):
    """A path that would leave the volume, or cannot be stored."""


MAX_PATH_BYTES = 4096
# A path as given, in characters: a limit a JSON Schema can state (maxLength
# counts characters), low enough that no such path is over MAX_PATH_BYTES
# (a character is at most 4 bytes of UTF-8).
MAX_PATH_CHARS = MAX_PATH_BYTES // 4

# What volume_path accepts, as a regex (ECMA-262 and Python alike) for
# schemas: no NUL, no '..' segment (its length is MAX_PATH_CHARS' to check).
_SEGMENT = r"(?:[^/.\x00][^/\x00]*|\.(?:[^/.\x00][^/\x00]*)?|\.\.[^/\x00]+)"
VOLUME_PATH_PATTERN = rf"^/*(?:{_SEGMENT}(?:/+{_SEGMENT})*)?/*$"


def volume_path(path: str) -> str:
    """``path`` as stored: '' for the root, else 'a/b' (no leading, trailing
    or doubled '/', no '.'). Refuses '..', NUL and over-long paths."""
    if not isinstance(path, str):
        raise VolumePathError(f"a volume path is a string, got {path!r}")
    if "\0" in path:
        raise VolumePathError(f"volume path {path!r} contains a NUL byte")
    if len(path) > MAX_PATH_CHARS:
        raise VolumePathError(f"volume path of {len(path)} characters is over {MAX_PATH_CHARS}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise VolumePathError(f"volume path {path!r} climbs out of the volume ('..')")
    clean = "/".join(parts)
    if len(clean.encode()) > MAX_PATH_BYTES:
        raise VolumePathError(
            f"volume path of {len(clean.encode())} bytes is over {MAX_PATH_BYTES}"
        )
    return clean


def ancestors(path: str) -> list[str]:
    """The directories above a stored path, outermost first ('a/b/c' -> ['a', 'a/b'])."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def is_under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or inside it ('' is the root, above everything)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")
