"""A ``USER`` (``name``, ``uid``, ``name:group``, ``uid:gid``) as the numeric
ids and home directory it has in an image, read from the image's own
``/etc/passwd`` and ``/etc/group`` as Docker reads them: a numeric uid that
the image does not list runs with gid 0 and home ``/``; a user runs with the
supplementary groups ``/etc/group`` lists it in, unless ``USER`` names its
group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class UserError(Exception):
    pass


@dataclass(frozen=True)
class ImageUser:
    uid: int
    gid: int
    home: str = "/"
    # Supplementary groups (OCI ``additionalGids``), primary one excluded.
    groups: tuple[int, ...] = ()


ROOT = ImageUser(0, 0, "/root")


def _table(root: Path, name: str) -> list[list[str]]:
    """The rows of ``/etc/<name>`` in the image at ``root`` (never followed out of it)."""
    path = root / "etc" / name
    if os.path.islink(root / "etc") or os.path.islink(path) or not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def image_user(spec: str, root: Path) -> ImageUser:
    """The user ``spec`` names in the image mounted at ``root``."""
    if not spec or spec in ("root", "0", "root:root", "0:0"):
        return ROOT
    user, _, group = spec.partition(":")
    passwd = [r for r in _table(root, "passwd") if len(r) >= 6]
    row = next((r for r in passwd if r[0] == user or (user.isdigit() and r[2] == user)), None)
    if row is None and not user.isdigit():
        raise UserError(f"user {user!r} is not in the image's /etc/passwd")
    uid = int(user) if row is None else int(row[2])
    gid = 0 if row is None else int(row[3])
    home = "/" if row is None else row[5] or "/"
    groups: tuple[int, ...] = ()
    if row is not None and not group:
        groups = tuple(
            sorted(
                {
                    int(r[2])
                    for r in _table(root, "group")
                    if len(r) >= 4 and r[2].isdigit() and row[0] in r[3].split(",")
                }
                - {gid}
            )
        )
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((r for r in _table(root, "group") if len(r) >= 3 and r[0] == group), None)
            if found is None:
                raise UserError(f"group {group!r} is not in the image's /etc/group")
            gid = int(found[2])
    return ImageUser(uid, gid, home, groups)


def oci_user(user: ImageUser) -> dict[str, object]:
    """``user`` as an OCI config's ``process.user``."""
    out: dict[str, object] = {"uid": user.uid, "gid": user.gid}
    if user.groups:
        out["additionalGids"] = list(user.groups)
    return out
