"""Code bundles and importing a user's file: what goes in, stable bytes, and
the module names the container will import."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from thaw.app import find_apps
from thaw.bundle import build_bundle, import_root, source_files
from thaw.deploy import app_bundle, import_source
from thaw.exception import InvalidError


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / "app.py", "import helpers\n")
    write(root / "helpers.py", "X = 1\n")
    write(root / "pkg" / "__init__.py")
    write(root / "pkg" / "mod.py", "Y = 2\n")
    write(root / "pkg" / "sub" / "__init__.py")
    write(root / "pkg" / "sub" / "deep.py")
    write(root / "pkg" / "data.json", "{}")  # not Python
    write(root / "pkg" / "not_a_package" / "loose.py")  # no __init__.py
    write(root / "scripts" / "tool.py")  # not a package
    write(root / ".venv" / "lib" / "__init__.py")
    write(root / ".hidden" / "__init__.py")
    write(root / "pkg" / "__pycache__" / "mod.cpython-311.pyc", "x")
    write(root / "README.md", "# hi")
    return root


@pytest.fixture
def clean_imports() -> Iterator[None]:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_bundle_holds_the_python_sources_beside_the_entry_and_its_packages(project: Path) -> None:
    assert source_files(project) == [
        "app.py",
        "helpers.py",
        "pkg/__init__.py",
        "pkg/mod.py",
        "pkg/sub/__init__.py",
        "pkg/sub/deep.py",
    ]
    bundle = build_bundle(project)
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as zf:
        assert zf.namelist() == list(bundle.files)
        assert zf.read("pkg/mod.py") == b"Y = 2\n"
        assert zf.testzip() is None
    assert bundle.sha256 == hashlib.sha256(bundle.data).hexdigest()


def test_same_sources_give_the_same_sha_whatever_the_mtimes(project: Path) -> None:
    first = build_bundle(project)
    later = time.time() + 3600
    for path in project.rglob("*.py"):
        os.utime(path, (later, later))
    assert build_bundle(project).sha256 == first.sha256
    (project / "helpers.py").write_text("X = 2\n")
    assert build_bundle(project).sha256 != first.sha256


def test_import_root_of_a_file_in_a_package(project: Path) -> None:
    assert import_root(project / "app.py") == (project.resolve(), "app")
    assert import_root(project / "pkg" / "sub" / "deep.py") == (project.resolve(), "pkg.sub.deep")
    assert import_root(project / "pkg" / "__init__.py") == (project.resolve(), "pkg")


APP_SOURCE = """
    import thaw

    app = thaw.App("{name}")

    @app.function()
    def f(x):
        return x
"""


def test_import_source_uses_the_module_name_not_main(tmp_path: Path, clean_imports: None) -> None:
    write(tmp_path / "svc" / "__init__.py")
    entry = write(tmp_path / "svc" / "entry.py", APP_SOURCE.format(name="svc-app"))
    module = import_source(str(entry))
    assert module.__name__ == "svc.entry"
    apps = find_apps(module)
    assert list(apps) == ["app"]
    (spec,) = apps["app"].specs()
    assert (spec.module, spec.qualname) == ("svc.entry", "f")
    bundle = app_bundle(apps["app"])
    assert bundle.root == tmp_path.resolve()
    assert "svc/entry.py" in bundle.files


def test_import_source_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match="no such file"):
        import_source(str(tmp_path / "nope.py"))


def test_functions_defined_inside_functions_cannot_be_bundled() -> None:
    import thaw

    app = thaw.App("locals")

    @app.function()
    def inner() -> None: ...

    with pytest.raises(InvalidError, match="defined inside a function"):
        app_bundle(app)


def test_an_app_without_functions_cannot_be_bundled() -> None:
    import thaw

    with pytest.raises(InvalidError, match="no functions or classes"):
        app_bundle(thaw.App("empty"))


def test_deploy_sends_the_requirements_files_text(tmp_path: Path) -> None:
    import thaw
    from thaw.deploy import with_local_content

    requirements = write(tmp_path / "requirements.txt", "numpy==2.0\nrich\n")
    image = thaw.Image.debian_slim().pip_install_from_requirements(requirements)
    app = thaw.App("reqs", image=image)

    @app.function()
    def f() -> None: ...

    steps = msgspec.to_builtins(with_local_content(f.spec).image)["steps"]
    assert steps[1] == {
        "op": "pip_install_from_requirements",
        "path": str(requirements),
        "requirements": "numpy==2.0\nrich\n",
    }
    assert "requirements" not in msgspec.to_builtins(f.spec.image)["steps"][1]
    requirements.unlink()
    with pytest.raises(InvalidError, match="cannot read requirements file"):
        with_local_content(f.spec)
