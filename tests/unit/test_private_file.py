"""Credential files and state dirs: 0600 files written whole, first writer
wins, and directories that other users cannot enter."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest
from thaw_core.private_file import private_dir, read_or_create, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "deep" / "admin-token"
        assert write_private(target, "one\n")
    finally:
        os.umask(old)
    assert mode(target) == 0o600 and target.read_text() == "one\n"
    assert not write_private(target, "two\n", replace=False)  # the first one stays
    assert target.read_text() == "one\n"
    assert write_private(target, "three\n")
    assert target.read_text() == "three\n" and mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["admin-token"]  # no tmp left


def test_read_or_create_makes_it_once(tmp_path: Path) -> None:
    made: list[int] = []

    def make() -> str:
        made.append(1)
        return "secret"

    path = tmp_path / "postgres-password"
    assert read_or_create(path, make) == "secret" == read_or_create(path, make)
    assert made == [1] and mode(path) == 0o600


def test_private_dir_closes_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    private_dir(d)
    assert mode(d) == 0o700
    made = private_dir(tmp_path / "new" / "state")
    assert mode(made) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory another group needs root")
def test_a_group_given_on_purpose_keeps_its_traverse_bit(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    os.chown(d, -1, pwd.getpwnam("nobody").pw_gid)
    d.chmod(0o750)
    private_dir(d)
    assert mode(d) == 0o710  # through, but no listing


def test_a_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(PermissionError, match="sticky"):
        private_dir(shared)
    assert shared.stat().st_mode & 0o7777 == 0o1777  # left as it was
