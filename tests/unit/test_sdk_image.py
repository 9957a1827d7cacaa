"""thaw.Image records build steps; image.imports() only tolerates missing
packages outside a container."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import thaw as modal

# debian_slim() without a version asks for the deploying client's own.
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
DEBIAN_SLIM = {"op": "debian_slim", "client_python": HERE}


def test_each_method_records_a_step_and_returns_a_new_image(tmp_path: Path) -> None:
    base = modal.Image.debian_slim()
    image = (
        base.apt_install("git", ["ffmpeg"])
        .pip_install("torch==2.13.0", "numpy", index_url="https://example.org/simple")
        .uv_pip_install("httpx")
        .pip_install_from_requirements(tmp_path / "requirements.txt")
        .run_commands("echo hi", "cd /app && make")
        .env({"HF_HOME": "/cache"})
        .workdir("/app")
        .add_local_dir(tmp_path / "src", "/app/src", ignore=["*.pyc"])
        .add_local_file("setup.cfg", "/app/setup.cfg")
        .add_local_python_source("mylib")
    )
    assert base.spec() == {"steps": [DEBIAN_SLIM]}  # untouched
    assert image.spec()["steps"] == [
        DEBIAN_SLIM,
        {"op": "apt_install", "packages": ["git", "ffmpeg"]},
        {
            "op": "pip_install",
            "packages": ["torch==2.13.0", "numpy"],
            "index_url": "https://example.org/simple",
        },
        {"op": "uv_pip_install", "packages": ["httpx"]},
        {"op": "pip_install_from_requirements", "path": str(tmp_path / "requirements.txt")},
        {"op": "run_commands", "commands": ["echo hi", "cd /app && make"]},
        {"op": "env", "vars": {"HF_HOME": "/cache"}},
        {"op": "workdir", "path": "/app"},
        {
            "op": "add_local_dir",
            "local_path": str(tmp_path / "src"),
            "remote_path": "/app/src",
            "ignore": ["*.pyc"],
        },
        {
            "op": "add_local_file",
            "local_path": os.path.abspath("setup.cfg"),
            "remote_path": "/app/setup.cfg",
        },
        {"op": "add_local_python_source", "modules": ["mylib"]},
    ]


def test_other_bases() -> None:
    assert modal.Image.from_registry("python:3.11-slim").spec() == {
        "steps": [{"op": "from_registry", "tag": "python:3.11-slim"}]
    }
    assert modal.Image.debian_slim(python_version="3.12").spec()["steps"] == [
        {"op": "debian_slim", "python_version": "3.12"}  # no client version then
    ]
    step = modal.Image.from_dockerfile("./Dockerfile").spec()["steps"][0]
    assert step == {"op": "from_dockerfile", "path": os.path.abspath("Dockerfile")}


def test_spec_is_a_copy() -> None:
    image = modal.Image.debian_slim().pip_install("a")
    image.spec()["steps"][1]["packages"].append("b")
    image.spec()["steps"].clear()
    assert image.spec()["steps"][1]["packages"] == ["a"]
    assert len(image.spec()["steps"]) == 2


def test_bad_steps_are_clear_errors() -> None:
    with pytest.raises(modal.exception.InvalidError, match="non-empty strings"):
        modal.Image.debian_slim().pip_install("")
    with pytest.raises(modal.exception.InvalidError, match="absolute path"):
        modal.Image.debian_slim().workdir("app")
    with pytest.raises(modal.exception.InvalidError, match="str -> str"):
        modal.Image.debian_slim().env({"N": 1})  # type: ignore[dict-item]


def test_imports_swallows_a_missing_package_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THAW_CONTAINER_ID", raising=False)
    image = modal.Image.debian_slim().pip_install("surely-not-installed")
    reached = []
    with image.imports():
        import surely_not_installed_pkg  # noqa: F401

        reached.append("after")  # the block stops at the failed import
    assert reached == []
    assert modal.is_local()


def test_imports_raises_inside_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THAW_CONTAINER_ID", "ct-1")
    assert not modal.is_local()
    with pytest.raises(ImportError), modal.Image.debian_slim().imports():
        import surely_not_installed_pkg  # noqa: F401


def test_imports_lets_other_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THAW_CONTAINER_ID", raising=False)
    with pytest.raises(ZeroDivisionError), modal.Image.debian_slim().imports():
        _ = 1 / 0
