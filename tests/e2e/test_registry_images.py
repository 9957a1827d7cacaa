"""Registry images end to end: `thaw deploy` of an app on
``Image.from_registry`` pulls from a real registry server (Debian's
docker-registry, holding an image made here from thaw's base rootfs), and
the function runs on it; private registries take their credentials from a
thaw secret."""

from __future__ import annotations

from pathlib import Path

import pytest
import thaw as modal
from fixtures.images import BUILD_TIMEOUT_S, IMAGE_SITE, step_statuses
from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"

pytestmark = [pytest.mark.usefixtures("use_platform"), pytest.mark.slow]


def deploy(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, tag: str, app: str, secret: str = ""
) -> tuple[int, str]:
    monkeypatch.setenv("IMG_REGISTRY_TAG", tag)
    monkeypatch.setenv("IMG_APP", app)
    monkeypatch.setenv("IMG_REGISTRY_SECRET", secret)
    if not secret:
        monkeypatch.delenv("IMG_REGISTRY_SECRET")
    out = platform.cli("deploy", str(APPS / "img_registry.py"), timeout=BUILD_TIMEOUT_S)
    return out.returncode, out.stdout + out.stderr


def test_a_function_runs_on_a_registry_image_pulled_once(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, base_image: str
) -> None:
    code, said = deploy(platform, monkeypatch, base_image, "img-registry")
    assert code == 0, said + platform.logs()
    # The pull is step 1: built here, or cached when another test of this
    # session (the Dockerfile tests build on the same base) pulled it first.
    statuses = step_statuses(said)
    assert statuses["1"] in ("built", "cached") and statuses["2"] == "built", said
    got = modal.Function.from_name("img-registry", "inspect").remote()
    assert got["six"].startswith(IMAGE_SITE), got
    assert got["marker"] == "from the registry\n" and got["issue_removed"] == "True"
    assert got["FROM_REG"] == "yes" and got["cwd"] == "/srv"

    # Another app on the same image: nothing pulled, nothing built.
    code, again = deploy(platform, monkeypatch, base_image, "img-registry-2")
    assert code == 0, again
    # (The tag is resolved again, as a tag may move; its layers are all stored.)
    assert step_statuses(again) == {"1": "cached", "2": "cached"}, again
    assert "0 built, 2 cached" in again, again
    assert modal.Function.from_name("img-registry-2", "inspect").remote()["FROM_REG"] == "yes"


def test_an_unknown_tag_fails_the_deploy_naming_it(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, base_image: str
) -> None:
    tag = base_image.rsplit(":", 1)[0] + ":no-such-tag"
    code, said = deploy(platform, monkeypatch, tag, "img-registry-unknown")
    assert code == 1, said
    assert tag in said and "no such image or tag" in said, said


def test_a_private_registry_needs_its_credentials_secret(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, private_image: str
) -> None:
    code, said = deploy(platform, monkeypatch, private_image, "img-registry-private")
    assert code == 1 and "needs credentials" in said and "REGISTRY_USERNAME" in said, said

    made = platform.cli(
        "secret",
        "create",
        "registry-creds",
        "REGISTRY_USERNAME=thaw",
        "REGISTRY_PASSWORD=s3cret-pw",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    code, said = deploy(
        platform, monkeypatch, private_image, "img-registry-private", secret="registry-creds"
    )
    assert code == 0, said + platform.logs()
    assert "s3cret-pw" not in said and "s3cret-pw" not in platform.logs()
    got = modal.Function.from_name("img-registry-private", "inspect").remote()
    assert got["marker"] == "from the registry\n"
