"""Images on other Python versions end to end: `thaw deploy` of
``debian_slim(python_version=...)`` builds on the base rootfs of that version
(deploy/make-rootfs.sh, one Debian suite per version), the builder adds the
runtime's own packages for it as a layer, and the function runs under that
Python with the image's packages, pure and compiled.

The versions this machine can have: 3.11 (bookworm, the default), 3.13
(trixie), 3.14 (forky's python3) and 3.15 (forky's python3.15, made the
base's /usr/local/bin/python3), all from Debian's archive, the only source of
CPython builds reachable here. 3.10 and 3.12 are in no Debian suite it
reaches, so deploying them must fail, saying which versions there are.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import pytest
import thaw as modal
from fixtures.images import BUILD_TIMEOUT_S
from fixtures.platform import Platform
from fixtures.web import past_cold_start
from thaw_core import hosttools, layers

APPS = Path(__file__).parent / "apps"
HAD_HERE = ("3.13", "3.14", "3.15")
NOT_HAD_HERE = ("3.10", "3.12")

pytestmark = [pytest.mark.usefixtures("use_platform"), pytest.mark.slow]


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=180) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def deploy(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, version: str, name: str
) -> tuple[int, str, float]:
    monkeypatch.setenv("IMG_PYTHON", version)  # the CLI inherits them
    monkeypatch.setenv("IMG_APP", name)
    started = time.monotonic()
    out = platform.cli("deploy", str(APPS / "img_python.py"), timeout=BUILD_TIMEOUT_S)
    return out.returncode, out.stdout + out.stderr, time.monotonic() - started


@pytest.mark.parametrize("version", HAD_HERE)
def test_a_function_runs_on_the_python_its_image_asks_for(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    have = layers.python_bases(hosttools.default_rootfs())
    assert version in have, f"no base rootfs with Python {version} ({have}): run `make setup`"
    name = "img-py-" + version.replace(".", "")
    code, said, first_s = deploy(platform, monkeypatch, version, name)
    assert code == 0, said + platform.logs()
    got = modal.Function.from_name(name, "inspect").remote()
    assert got["version"].startswith(version + "."), got
    site = f"/usr/local/lib/python{version}/dist-packages/"
    assert got["six"].startswith(site), got
    tag = "cpython-" + version.replace(".", "")
    assert got["speedups"].startswith(site + "markupsafe/_speedups." + tag), got
    assert got["escaped"] == "&lt;b&gt;"
    assert got["host_only"] == "", got
    # A web endpoint too, with the runtime layer's fastapi.
    url = modal.Function.from_name(name, "hello").get_web_url()
    status, body = past_cold_start(partial(fetch, url))
    assert status == 200, body.decode() + platform.logs()
    assert json.loads(body)["version"] == got["version"]

    # The same image again, under another app: every layer is cached.
    code, again, cached_s = deploy(platform, monkeypatch, version, name + "-again")
    assert code == 0, again
    assert "already built" in again, again
    again_got = modal.Function.from_name(name + "-again", "inspect").remote()
    assert again_got["version"] == got["version"]
    print(f"\nPython {version} image: first deploy {first_s:.1f} s, cached {cached_s:.1f} s")


@pytest.mark.parametrize("version", NOT_HAD_HERE)
def test_a_version_this_machine_cannot_have_fails_the_deploy_saying_so(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    name = "img-py-" + version.replace(".", "")
    code, said, _ = deploy(platform, monkeypatch, version, name)
    assert code == 1, said
    assert f"python_version='{version}' is not available" in said, said
    assert "Python 3.11" in said and "Python 3.13" in said, said  # what there is
    assert name not in {a["name"] for a in platform.api("/v1/apps")}


def test_the_default_image_keeps_the_clients_python(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # debian_slim() without a version: this client's own (the venv's, 3.11).
    code, said, _ = deploy(platform, monkeypatch, "", "img-py-default")
    assert code == 0, said + platform.logs()
    got = modal.Function.from_name("img-py-default", "inspect").remote()
    here = f"{sys.version_info.major}.{sys.version_info.minor}."
    assert got["version"].startswith(here), got
    # The image's packages and thaw's runtime: nothing else of the host's venv.
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert got["six"].startswith(f"/usr/local/lib/python{own}/dist-packages/"), got
    assert got["host_only"] == "", got
