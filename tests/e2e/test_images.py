"""Images end to end: `thaw deploy` builds a function's image with the real
builder (runc build steps, layers in S3, catalog in Postgres), shows each
step, and the node agent runs the function on the image's layers.

The runtime's own packages (six among them, from the test venv) are on every
container's sys.path *after* the image's, so "the image has six" is checked
by where six is imported from, not by whether it imports.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import thaw as modal
from fixtures.images import BUILD_TIMEOUT_S, IMAGE_SITE, step_statuses
from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"

pytestmark = [pytest.mark.usefixtures("use_platform"), pytest.mark.slow]

def deploy_out(platform: Platform, app_file: str, *args: str) -> str:
    out = platform.cli("deploy", str(APPS / app_file), *args, timeout=BUILD_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr + platform.logs()
    return out.stdout


@pytest.fixture(scope="module")
def basic(platform: Platform) -> str:
    return deploy_out(platform, "img_basic.py")


def test_a_function_runs_on_its_built_image(platform: Platform, basic: str) -> None:
    # Every step was shown, and the ones that make files were built. The bare
    # base layer is shared: another test of the session may have built it first.
    statuses = step_statuses(basic)
    assert statuses.pop("1") in ("built", "cached"), basic
    assert statuses == {
        "2": "built",
        "3": "built",
        "4": "applied",
        "5": "built",
    }, basic
    got = modal.Function.from_name("img-basic", "inspect").remote()
    assert got["six"].startswith(IMAGE_SITE), got
    assert got["hello"] == "hi\n"
    assert got["data"] == "hello from the deploying machine\n"
    assert got["A"] == "1"


def test_deploying_again_builds_nothing_and_one_change_rebuilds_from_there(
    platform: Platform, basic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = deploy_out(platform, "img_basic.py")
    assert "already built, 5 steps cached" in again, again
    assert "built in" not in again

    monkeypatch.setenv("IMG_HELLO", "echo bye > /hello")  # the CLI inherits it
    changed = deploy_out(platform, "img_basic.py", "--name", "img-basic-2")
    # Base and pip layers reused; the changed command and every step after it redone.
    assert step_statuses(changed) == {
        "1": "cached",
        "2": "cached",
        "3": "built",
        "4": "applied",
        "5": "built",
    }, changed
    got = modal.Function.from_name("img-basic-2", "inspect").remote()
    assert got["hello"] == "bye\n" and got["A"] == "1"
    # The first app still runs on its own image.
    assert modal.Function.from_name("img-basic", "inspect").remote()["hello"] == "hi\n"


def test_a_failing_step_fails_the_deploy_with_its_step_and_exit_code(platform: Platform) -> None:
    out = platform.cli("deploy", str(APPS / "img_fail.py"), timeout=BUILD_TIMEOUT_S)
    assert out.returncode == 1, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert "step 1 (run_commands) exited with code 3" in said, said
    assert "about to fail" in said  # the step's log tail
    assert "img-fail" not in {a["name"] for a in platform.api("/v1/apps")}


def test_two_images_run_side_by_side_on_one_node(platform: Platform) -> None:
    deploy_out(platform, "img_pair.py")
    on_six = modal.Function.from_name("img-pair", "on_six")
    on_marker = modal.Function.from_name("img-pair", "on_marker")
    with ThreadPoolExecutor(2) as pool:
        six_f, marker_f = pool.submit(on_six.remote), pool.submit(on_marker.remote)
        six, marker = six_f.result(120), marker_f.result(120)

    assert six["six"].startswith(IMAGE_SITE) and six["marker"] == "" and six["WHICH"] == "six"
    assert six["cwd"] == "/"
    assert not marker["six"].startswith(IMAGE_SITE), "six leaked into the other image"
    assert marker["marker"] == "marker\n" and marker["WHICH"] == "" and marker["cwd"] == "/srv"

    def running() -> list[dict[str, Any]]:
        body = platform.api("/v1/containers?app=img-pair")
        return [c for c in body["containers"] if c["state"] == "ready"]

    deadline = time.monotonic() + 10
    while len(running()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    live = running()
    assert {c["function"] for c in live} == {"on_six", "on_marker"}
    assert {c["node_id"] for c in live} == {"agent-a"}


def test_local_dirs_and_python_sources_land_in_the_image(platform: Platform) -> None:
    deploy_out(platform, "img_dir.py")
    got = modal.Function.from_name("img-dir", "listing").remote()
    assert got["files"] == ["a.txt", "sub/b.sh"]  # skip.log ignored
    assert got["script_mode"] == 0o755
    assert "from the helper" in got["helper"]
    assert got["root_importable"] is True


def _http(platform: Platform, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        platform.gateway_url + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {platform.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return r.status, json.loads(data) if data.strip() else None
    except urllib.error.HTTPError as e:
        data = e.read()
        return e.code, json.loads(data) if data.strip() else None


def test_file_uploads_are_verified_and_bad_image_specs_refused(platform: Platform) -> None:
    content = b"content an image adds\n"
    sha = hashlib.sha256(content).hexdigest()
    assert _http(platform, "HEAD", f"/v1/files/{sha}")[0] == 404
    status, body = _http(platform, "PUT", f"/v1/files/{sha}", b"something else")
    assert status == 400 and "nothing was stored" in body["error"]["message"]
    assert _http(platform, "PUT", f"/v1/files/{sha}", content) == (
        201,
        {"sha256": sha, "size": len(content)},
    )
    assert _http(platform, "HEAD", f"/v1/files/{sha}")[0] == 200

    bundle = b"not really a zip: the deploy is refused before it is opened"
    bundle_sha = hashlib.sha256(bundle).hexdigest()
    assert _http(platform, "PUT", f"/v1/bundles/{bundle_sha}", bundle)[0] == 201
    bad = {
        "bundle_sha256": bundle_sha,
        "functions": [
            {
                "name": "f",
                "module": "m",
                "qualname": "f",
                "image": {
                    "steps": [{"op": "debian_slim"}, {"op": "pip_install", "packages": "six"}]
                },
            }
        ],
    }
    status, body = _http(platform, "POST", "/v1/apps/img-bad/deploy", json.dumps(bad).encode())
    assert status == 400, body
    assert "functions[0].image.steps[1].packages" in body["error"]["message"]
