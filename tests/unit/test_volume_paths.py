"""Paths inside a volume never leave it."""

from __future__ import annotations

import pytest
from thaw_core.volumes import VolumePathError, ancestors, is_under, volume_path


@pytest.mark.parametrize(
    ("given", "stored"),
    [("/", ""), ("", ""), ("/data/x.txt", "data/x.txt"), ("a//b/./c/", "a/b/c"), ("a", "a")],
)
def test_paths_are_stored_relative_to_the_root(given: str, stored: str) -> None:
    assert volume_path(given) == stored


@pytest.mark.parametrize("bad", ["..", "../x", "/a/../../b", "a/..", "a\0b", "x" * 5000])
def test_paths_that_leave_the_volume_or_cannot_be_stored_are_refused(bad: str) -> None:
    with pytest.raises(VolumePathError):
        volume_path(bad)


def test_ancestors_and_under() -> None:
    assert ancestors("a/b/c") == ["a", "a/b"] and ancestors("a") == []
    assert is_under("a/b", "a") and is_under("a", "a") and is_under("a", "")
    assert not is_under("ab", "a")
