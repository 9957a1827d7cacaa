"""The runtime layer (thaw_builder.runtime_layer) holds every distribution the
container runtime imports: an image on another Python has nothing else."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from thaw_builder.runtime_layer import RUNTIME_DIR_IN_IMAGE, pinned, runtime_step

# Run in a fresh interpreter (this test process has imported far more), with
# every distribution outside the layer refused, as in an image on another
# Python: a needed one missing fails the import, an optional one is skipped.
_IMPORTS_WITH_ONLY = """
import importlib.metadata, json, sys
allowed = set(json.loads(sys.argv[1]))
dists = importlib.metadata.packages_distributions()
norm = lambda name: name.lower().replace("_", "-")
refused = set()

class OnlyTheLayer:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top not in dists:
            return None
        if any(norm(d) in allowed for d in dists[top]):
            return None
        refused.add(top)
        raise ModuleNotFoundError(f"No module named {top!r}", name=top)

sys.meta_path.insert(0, OnlyTheLayer())
import thaw.runtime.main
from fastapi import FastAPI
FastAPI().add_api_route("/", lambda: 1)
import a2wsgi, httpx
httpx.AsyncClient()
print(json.dumps(sorted(refused)))
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def test_the_runtime_imports_with_only_the_layers_distributions() -> None:
    allowed = sorted({_norm(p.split("==")[0]) for p in pinned()} | {"thaw", "thaw-core"})
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS_WITH_ONLY, json.dumps(allowed)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, (
        f"a distribution the runtime needs is not in the layer: {out.stderr}"
    )
    # Only optional imports were refused (httpx's CLI extras, say), and they were tried.
    print("refused optional imports:", out.stdout.strip())


def test_the_step_pins_this_environments_versions_into_the_runtime_dir() -> None:
    step = runtime_step()
    import msgspec

    assert f"msgspec=={msgspec.__version__}" in step.packages
    assert f"--target {RUNTIME_DIR_IN_IMAGE}" in step.extra_options
    assert "--no-deps" in step.extra_options


def test_no_container_gets_the_venv_mounted(tmp_path: Path) -> None:
    """On the agent's own Python a container gets thaw's source dirs and the
    runtime's own distributions, laid out apart: none of the venv's others."""
    from thaw_agent import oci
    from thaw_agent.runtime_dir import own_runtime_dir

    packages = own_runtime_dir(tmp_path)
    assert own_runtime_dir(tmp_path) == packages  # laid out once
    own = oci.runtime_for("", packages)
    assert oci.runtime_for(f"{sys.version_info.major}.{sys.version_info.minor}", packages) == own
    assert own.paths[-1] == packages and own.in_image == ()
    other = oci.runtime_for("3.99", packages)
    assert other.in_image == (RUNTIME_DIR_IN_IMAGE,)
    assert set(other.paths) == set(own.paths) - {packages}  # thaw and thaw_core's source dirs
    for files in (own, other):
        assert not any("site-packages" in str(p) for p in files.paths), files.paths
    laid_out = {p.name for p in packages.iterdir()}
    assert {"msgspec", "aiohttp", "fastapi", "cloudpickle"} <= laid_out
    # The venv has these (the tests use them); a container must not.
    for name in ("flask", "pytest", "requests", "yaml", "boto3"):
        assert importlib.util.find_spec(name) is not None, name
        assert name not in laid_out, name


def test_the_laid_out_packages_import_the_runtime_alone(tmp_path: Path) -> None:
    """The runtime, fastapi and the OTLP exporter (entry points need the
    .dist-info) import from the laid-out dir with the venv out of the path,
    byte-compiled (the dir is mounted read-only)."""
    from thaw_agent import oci
    from thaw_agent.runtime_dir import own_runtime_dir

    packages = own_runtime_dir(tmp_path)
    assert list(packages.glob("msgspec/__pycache__/*.pyc"))
    path = [str(p) for p in oci.runtime_for("", packages).paths]
    probe = (
        "import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p] + "
        f"{path!r}; import thaw.runtime.main, fastapi, a2wsgi, httpx; "
        "from opentelemetry.sdk.trace import TracerProvider; TracerProvider(); "
        "import importlib.util; print(importlib.util.find_spec('flask'))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_thaw_installed_into_an_environment_is_refused_not_mounted_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from thaw_agent import oci

    site = tmp_path / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(oci, "_package_parent", lambda name: site)
    oci._pure_paths.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="containers would see whole"):
            oci.runtime_for("", tmp_path)
    finally:
        monkeypatch.undo()
        oci._pure_paths.cache_clear()
