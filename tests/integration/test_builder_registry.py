"""Registry images in the builder: a real registry server (Debian's
docker-registry) holding an image made here from thaw's base rootfs, pulled
with skopeo into thaw's layers once per digest."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from fixtures.builder import (
    BuilderEnv,
    env,  # noqa: F401 - a fixture
)
from fixtures.host import needs_containers
from fixtures.registry import MARKER, REMOVED, Registry, base_layout, oci_layout
from thaw_builder.plan import runtime_python
from thaw_builder.registry import Credentials, Skopeo, parse_reference

pytestmark = [needs_containers, pytest.mark.slow]

SIX = {"op": "pip_install", "packages": ["six"]}


def registry_image(tag: str, *steps: dict[str, object]) -> dict[str, object]:
    return {"steps": [{"op": "from_registry", "tag": tag}, *steps]}


async def test_a_registry_image_builds_runs_and_is_pulled_once(
    env: BuilderEnv, base_image: str
) -> None:
    token = uuid.uuid4().hex[:8]
    spec = registry_image(base_image, {"op": "run_commands", "commands": [f"echo {token} > t"]})
    first = await env.build(spec, timeout_s=300)
    assert first.result.ok, "\n".join([first.result.error, *first.result.log_tail])
    manifest = first.result.manifest
    assert manifest is not None
    assert manifest.env["FROM_REG"] == "yes" and manifest.workdir == "/srv"
    assert manifest.python_version == "3.11" and manifest.python == ""
    # The pull is the first step, with its progress.
    assert first.final_status()[0] in ("built", "cached")
    out = await env.run_in_image(
        manifest, ["/bin/sh", "-c", f"cat {MARKER} t; test -e {REMOVED} || echo removed"]
    )
    assert out.split() == ["from", "the", "registry", token, "removed"]

    again = await env.build(spec)
    assert again.result.ok and again.result.image_id == first.result.image_id
    assert again.final_status()[0] == "cached"
    # Another image on the same base pulls nothing: its layers are stored.
    other = await env.build(registry_image(base_image, SIX))
    assert other.result.ok, other.result.error
    assert other.final_status()[0] == "cached"
    assert not [line for line in other.output(0) if "pulling" in line]


async def test_an_unknown_tag_fails_naming_it(env: BuilderEnv, registry: Registry) -> None:
    tag = f"{registry.host}/thaw-test/base:no-such-tag"
    failed = await env.build(registry_image(tag))
    assert not failed.result.ok and failed.result.failed_step == 0
    assert tag in failed.result.error and "no such image or tag" in failed.result.error


@pytest.fixture(scope="module")
def python_misfits(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two images thaw's runtime cannot run on, made from thaw's base:
    ``none`` without python3 (whited out), ``old`` whose python3 says 3.9."""
    root = tmp_path_factory.mktemp("python-misfits")
    (root / "base").mkdir()
    base_tar = base_layout(root / "base").parent / "base.tar"
    made = {}
    for name, files in {
        "none": {"usr/bin/.wh.python3": ""},
        "old": {"usr/local/bin/python3": "#!/bin/sh\necho 3.9.18\n"},
    }.items():
        top = root / f"top-{name}"
        for rel, text in files.items():
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            (top / rel).write_text(text)
            (top / rel).chmod(0o755)
        made[name] = registry.push(oci_layout(root / name, [base_tar, top]), f"thaw-test/{name}:1")
    return made


async def test_an_image_thaw_cannot_run_on_fails_naming_the_python_it_found(
    env: BuilderEnv, python_misfits: dict[str, str]
) -> None:
    none = await env.build(registry_image(python_misfits["none"]), timeout_s=300)
    assert not none.result.ok and none.result.failed_step == 0, none.result
    # Named as pulled: the repository pinned to the tag's digest.
    repository = python_misfits["none"].rsplit(":", 1)[0]
    assert f"image {repository}@sha256:" in none.result.error, none.result.error
    assert "has no python3" in none.result.error, none.result.error
    assert f"add_python={runtime_python()!r}" in none.result.error, none.result.error

    old = await env.build(registry_image(python_misfits["old"]), timeout_s=300)
    assert not old.result.ok and old.result.failed_step == 0, old.result
    said = old.result.error
    assert "has Python 3.9 (/usr/local/bin/python3)" in said, said
    assert f"runs on Python {runtime_python()}" in said, said


async def test_a_private_registry_says_it_needs_credentials(
    env: BuilderEnv, private_image: str
) -> None:
    failed = await env.build(registry_image(private_image))
    assert not failed.result.ok
    assert "needs credentials" in failed.result.error, failed.result.error
    assert "REGISTRY_USERNAME" in failed.result.error


async def test_credentials_stay_off_the_command_line(private_image: str) -> None:
    """Every local user reads a process's argv: skopeo gets the registry
    password from a 0600 auth file that lives as long as the command."""
    password = "s3cret-pw"  # the private registry fixture's
    skopeo = Skopeo(Credentials("thaw", password))
    ref = parse_reference(private_image)
    with skopeo._common(ref, "src-") as args:
        assert not [a for a in args if password in a], args
        authfile = Path(next(a for a in args if a.startswith("--src-authfile=")).partition("=")[2])
        assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    assert not authfile.exists()
    assert await skopeo.inspect(ref)  # and skopeo finds them there
