"""bootstrap.py under a bare python (no site-packages), as in a container:
where it puts the bundle and the runtime's packages on sys.path, and what it
says when the runtime cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from thaw.runtime.paths import bootstrap_file, runtime_paths, runtime_paths_env


def run_bare(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bundle_then_runtime_paths_are_appended(tmp_path: Path) -> None:
    bundle, first, second = tmp_path / "bundle", tmp_path / "p0", tmp_path / "p1"
    code = (
        "import json, runpy, sys; before = list(sys.path);"
        f"m = runpy.run_path({bootstrap_file()!r}, run_name='bootstrap');"
        "m['_extend_sys_path'](); print(json.dumps([before, sys.path]))"
    )
    sources = tmp_path / "root"
    env = {
        "THAW_BUNDLE_DIR": str(bundle),
        "THAW_LOCAL_SOURCE_DIR": str(sources),
        "THAW_RUNTIME_PATHS": f"{first}:{second}:",
    }
    out = run_bare(code, env)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout)
    # The image's own paths keep their places, ahead of everything thaw adds;
    # add_local_python_source's modules come right after the bundle.
    assert after == before + [str(bundle), str(sources), str(first), str(second)]


def test_runtime_paths_cover_the_runtime_packages() -> None:
    code = (
        "import sys; sys.path += sys.argv[1:];"
        "import thaw.runtime.main, thaw_core.container_protocol, cloudpickle, msgspec; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *runtime_paths()],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "ok", out.stderr
    assert runtime_paths_env(2) == "/opt/thaw/path/0:/opt/thaw/path/1"


def test_missing_runtime_says_why(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-S", bootstrap_file()],
        env={"THAW_BUNDLE_DIR": str(tmp_path), "THAW_RUNTIME_PATHS": ""},
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "thaw: cannot load the runtime under python 3." in out.stderr
    assert "No module named 'thaw'" in out.stderr
