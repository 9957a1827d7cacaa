"""The digest a cached snapshot is checked against before each restore:
any change to what the restore reads changes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from thaw_agent.snapshot_digest import DIGEST_FILE, digest_problem, tree_digest, write_digest

INFO = b'{"snapshot_id": "s"}'


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    root = tmp_path / "snap"
    (root / "images").mkdir(parents=True)
    (root / "images" / "pages-1.img").write_bytes(os.urandom(100_000))
    (root / "images" / "empty.img").write_bytes(b"")
    (root / "upper" / "var" / "tmp").mkdir(parents=True)
    (root / "upper" / "var" / "tmp" / "made").write_text("from the snapshot")
    (root / "upper" / "link").symlink_to("var/tmp/made")
    (root / "info.json").write_bytes(INFO)
    write_digest(root, INFO)
    return root


def test_an_unchanged_entry_passes(entry: Path) -> None:
    assert digest_problem(entry, "info.json") is None
    assert (entry / DIGEST_FILE).read_text() == tree_digest(entry, INFO)


@pytest.mark.parametrize(
    "change",
    [
        "flip a byte of pages-1.img",
        "truncate an image",
        "rename a file",
        "add a file",
        "retarget a symlink",
        "edit info.json",
        "change a mode",
    ],
)
def test_any_change_fails(entry: Path, change: str) -> None:
    pages = entry / "images" / "pages-1.img"
    match change:
        case "flip a byte of pages-1.img":
            data = bytearray(pages.read_bytes())
            data[50_000] ^= 0x01
            pages.write_bytes(bytes(data))
        case "truncate an image":
            os.truncate(pages, 99_999)
        case "rename a file":
            (entry / "upper" / "var" / "tmp" / "made").rename(entry / "upper" / "var" / "tmp" / "mad")
        case "add a file":
            (entry / "images" / "extra.img").write_bytes(b"x")
        case "retarget a symlink":
            (entry / "upper" / "link").unlink()
            (entry / "upper" / "link").symlink_to("elsewhere")
        case "edit info.json":
            (entry / "info.json").write_bytes(INFO.replace(b"s", b"t"))
        case "change a mode":
            pages.chmod(0o777)
    problem = digest_problem(entry, "info.json")
    assert problem is not None and "changed" in problem


def test_no_recorded_digest_or_a_missing_part_fails(entry: Path) -> None:
    (entry / DIGEST_FILE).unlink()
    assert digest_problem(entry, "info.json") == "it has no recorded digest"
    write_digest(entry, INFO)
    (entry / "images" / "pages-1.img").unlink()
    (entry / "images" / "empty.img").unlink()
    (entry / "images").rmdir()
    problem = digest_problem(entry, "info.json")
    assert problem is not None and "cannot be read" in problem
