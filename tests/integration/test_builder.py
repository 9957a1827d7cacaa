"""The builder service end to end: build requests over NATS, layers in a real
S3 server, the catalog in Postgres, steps in runc containers; then a plain
runc container on the built image, its layers pulled into a fresh cache as a
node agent would.

One builder for the module (its first build exports the base rootfs, a few
seconds); each test uses images of its own, except where reuse is the point.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fixtures.builder import (
    BuilderEnv,
    env,  # noqa: F401 - a fixture
)
from fixtures.host import needs_containers
from thaw_core import contract
from thaw_core.schema import (
    BuildLog,
    BuildResult,
    ErrorEvent,
    ImageLookupReply,
)

pytestmark = [
    needs_containers,
    pytest.mark.slow,
]

_result = msgspec.json.Decoder(BuildResult)
_log = msgspec.json.Decoder(BuildLog)
_lookup = msgspec.json.Decoder(ImageLookupReply)
_error = msgspec.json.Decoder(ErrorEvent)


def image(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": [{"op": "debian_slim"}, *steps]}


SIX = {"op": "pip_install", "packages": ["six"]}
HELLO = {"op": "run_commands", "commands": ["echo hi > /hello"]}
ENV_A = {"op": "env", "vars": {"A": "1"}}
IMAGE = image(SIX, HELLO, ENV_A)


async def test_an_image_builds_runs_and_rebuilds_from_cache(env: BuilderEnv) -> None:
    first = await env.build(IMAGE)
    assert first.result.ok, "\n".join([first.result.error, *first.result.log_tail])
    manifest = first.result.manifest
    assert manifest is not None and manifest.image_id == first.result.image_id
    assert manifest.env == {"A": "1"}
    # base, pip_install, run_commands: three stored layers; env is metadata.
    assert len(manifest.layers) == 3 and manifest.layers[0].base == "debian_slim"
    assert first.final_status() == {0: "cached", 1: "built", 2: "built", 3: "applied"} or (
        first.final_status() == {0: "built", 1: "built", 2: "built", 3: "applied"}
    )
    assert any("six" in line for line in first.output(1)), first.output(1)
    # A layer is exactly what its step changed: no build mounts, caches or /tmp.
    assert await env.layer_names(manifest.layers[2].digest) == ["hello"]
    pip_layer = await env.layer_names(manifest.layers[1].digest)
    assert any(n.endswith(("site-packages/six.py", "dist-packages/six.py")) for n in pip_layer)
    assert not [n for n in pip_layer if n.startswith((".thaw-build", "tmp/", "root/.cache"))]

    again = await env.build(IMAGE)
    assert again.result.ok and again.result.image_id == first.result.image_id
    assert again.result.built_steps == 0 and again.result.cached_steps == 3
    assert again.final_status() == {0: "cached", 1: "cached", 2: "cached", 3: "applied"}
    assert "building" not in {s for st in again.statuses().values() for s in st}
    assert again.result.manifest == manifest

    out = await env.run_in_image(
        manifest,
        [
            "/usr/bin/python3",
            "-c",
            "import os, six; print(six.__name__, open('/hello').read().strip(), os.environ['A'])",
        ],
    )
    assert out.split() == ["six", "hi", "1"]


async def test_changing_one_step_rebuilds_it_and_the_steps_after(env: BuilderEnv) -> None:
    token = uuid.uuid4().hex[:8]
    copy = {"op": "run_commands", "commands": ["cat /hello > /copy"]}
    before = image(SIX, {"op": "run_commands", "commands": [f"echo {token} > /hello"]}, copy, ENV_A)
    after = image(
        SIX, {"op": "run_commands", "commands": [f"echo {token}-new > /hello"]}, copy, ENV_A
    )
    a = await env.build(before)
    assert a.result.ok, a.result
    b = await env.build(after)
    assert b.result.ok, b.result
    assert b.final_status() == {0: "cached", 1: "cached", 2: "built", 3: "built", 4: "applied"}
    assert b.result.built_steps == 2 and b.result.cached_steps == 2
    assert a.result.manifest is not None and b.result.manifest is not None
    ids_a = [ref.layer_id for ref in a.result.manifest.layers]
    ids_b = [ref.layer_id for ref in b.result.manifest.layers]
    assert ids_a[:2] == ids_b[:2] and ids_a[2] != ids_b[2] and ids_a[3] != ids_b[3]
    out = await env.run_in_image(b.result.manifest, ["/bin/cat", "/copy"])
    assert out.strip() == f"{token}-new"


async def test_a_failing_step_names_the_step_and_its_exit_code(env: BuilderEnv) -> None:
    token = uuid.uuid4().hex[:8]
    spec = image(
        {"op": "run_commands", "commands": [f"echo about to fail {token}", "exit 3", "echo never"]},
        ENV_A,
    )
    failed = await env.build(spec)
    r = failed.result
    assert not r.ok
    assert (r.failed_step, r.failed_op, r.exit_code) == (1, "run_commands", 3)
    assert "exited with code 3" in r.error
    assert any(f"about to fail {token}" in line for line in r.log_tail), r.log_tail
    assert not any(line.strip() == "never" for line in r.log_tail)
    assert failed.final_status()[1] == "failed"
    # Nothing was cataloged: the image is not built, and a retry fails alike.
    assert not (await env.lookup({"image": spec})).built
    again = await env.build(spec)
    assert not again.result.ok and again.result.exit_code == 3


async def test_concurrent_builds_of_one_image_build_it_once(env: BuilderEnv) -> None:
    token = uuid.uuid4().hex
    spec = image({"op": "run_commands", "commands": [f"sleep 1; echo {token} > /token"]})
    one, two = await asyncio.gather(env.build(spec), env.build(spec))
    assert one.result.ok and two.result.ok, (one.result, two.result)
    assert one.result.image_id == two.result.image_id
    statuses = one.statuses()[1] + two.statuses()[1]
    assert statuses.count("built") == 1, statuses
    assert statuses.count("cached") == 1, statuses


async def test_lookup_tells_built_from_unbuilt(env: BuilderEnv) -> None:
    built = await env.build(IMAGE)
    assert built.result.ok
    by_spec = await env.lookup({"image": IMAGE})
    assert by_spec.built and by_spec.image_id == built.result.image_id
    assert by_spec.manifest == built.result.manifest
    by_id = await env.lookup({"image_id": built.result.image_id})
    assert by_id.built and by_id.manifest == built.result.manifest
    new = await env.lookup({"image": image({"op": "run_commands", "commands": [uuid.uuid4().hex]})})
    assert not new.built and len(new.image_id) == 64 and new.manifest is None
    assert "give an image_id" in (await env.lookup({})).error
    bad = await env.lookup({"image": {"steps": [{"op": "pip_install", "packages": ["six"]}]}})
    assert not bad.built and "debian_slim" in bad.error


async def test_bad_requests_get_clear_errors_and_lose_nothing(env: BuilderEnv) -> None:
    errors: asyncio.Queue[ErrorEvent] = asyncio.Queue()

    async def on_error(msg: Any) -> None:
        await errors.put(_error.decode(msg.data))

    sub = await env.bus.nc.subscribe("thaw.event.error.builder", cb=on_error)
    try:
        # Not JSON at all: refused; there is nobody to send a result to.
        await env.bus.publish(contract.BUILD_REQUEST, b"{not json")
        event = await asyncio.wait_for(errors.get(), 10)
        assert event.code == "malformed" and "not json" in event.payload_preview

        # A step the schema does not know: refused, and the requester is told why.
        bad = await env.build(image({"op": "pip_install", "packages": "six"}))
        assert not bad.result.ok and "$.image.steps[1].packages" in bad.result.error
        assert (await asyncio.wait_for(errors.get(), 10)).code == "malformed"

        # Valid, but not buildable here: a failed result naming the step.
        registry = await env.build({"steps": [{"op": "from_registry", "tag": "python:3.11"}]})
        assert not registry.result.ok and registry.result.failed_step == 0
        # A Docker Hub short name, read as Docker reads it (no registry is reachable here).
        assert "docker.io/library/python:3.11" in registry.result.error
        first_not_base = await env.build({"steps": [SIX]})
        assert "debian_slim" in first_not_base.result.error
        no_files = await env.build(
            image({"op": "add_local_file", "local_path": "/x", "remote_path": "/x"})
        )
        assert no_files.result.failed_step == 1 and "files/<sha256>" in no_files.result.error
    finally:
        await sub.unsubscribe()
    # The builder is still up and building.
    assert (await env.build(IMAGE)).result.ok


async def test_local_files_are_added_from_uploaded_blobs(env: BuilderEnv) -> None:
    content = f"print('hello from {uuid.uuid4().hex}')\n".encode()
    sha = hashlib.sha256(content).hexdigest()
    await env.blob.put(f"files/{sha}", content, sha256=sha)
    step = {
        "op": "add_local_file",
        "local_path": "/home/me/app.py",
        "remote_path": "/root/app/app.py",
        "files": [{"dest": "/root/app/app.py", "sha256": sha, "mode": 0o755}],
    }
    built = await env.build(image(step))
    assert built.result.ok, built.result
    assert built.result.manifest is not None
    out = await env.run_in_image(
        built.result.manifest,
        ["/bin/sh", "-c", "stat -c '%a %U' /root /root/app/app.py; python3 /root/app/app.py"],
    )
    lines = out.splitlines()
    # /root keeps the base image's own mode; the file has the one sent.
    assert lines[0] == "700 root" and lines[1] == "755 root"
    assert lines[2] == content.decode().split("'")[1]

    # The same file from another directory of the deploying machine: same layer.
    moved = await env.build(image({**step, "local_path": "/elsewhere/app.py"}))
    assert moved.result.image_id == built.result.image_id and moved.result.built_steps == 0

    missing = "f" * 64
    gone = await env.build(
        image({**step, "files": [{"dest": "/root/app/app.py", "sha256": missing}]})
    )
    assert not gone.result.ok and f"files/{missing}" in gone.result.error


def private_wheel(directory: Path, name: str) -> None:
    """A pure-Python wheel that exists nowhere but in ``directory``."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "VALUE = 'private'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: thaw-test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = [f"{path},," for path in files] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


async def test_pip_uses_a_private_wheel_dir_and_steps_run_in_the_workdir(env: BuilderEnv) -> None:
    name = f"thawprivate{uuid.uuid4().hex[:8]}"
    wheels = env.root / "private-wheels"
    private_wheel(wheels, name)
    built = await env.build(
        image(
            {"op": "workdir", "path": "/srv/app"},
            {
                "op": "pip_install",
                "packages": [name],
                "find_links": str(wheels),
                "extra_options": "--no-index",
            },
            {"op": "run_commands", "commands": ["pwd > where"]},
        )
    )
    assert built.result.ok, "\n".join([built.result.error, *built.result.log_tail])
    manifest = built.result.manifest
    assert manifest is not None and manifest.workdir == "/srv/app"
    out = await env.run_in_image(
        manifest,
        ["/usr/bin/python3", "-c", f"import {name}; print({name}.VALUE, open('where').read())"],
    )
    assert out.split() == ["private", "/srv/app"]


async def test_run_commands_pip_uses_the_machines_settings_and_leaves_them_out(
    env: BuilderEnv,
) -> None:
    token = uuid.uuid4().hex[:8]
    # pyjokes is on none of this machine's local wheel dirs or indexes: pip
    # gets it from the package index, over TLS with the CA bundle the
    # machine's pip settings name (without it: CERTIFICATE_VERIFY_FAILED).
    built = await env.build(
        image({"op": "run_commands", "commands": [f"pip install six pyjokes # {token}"]})
    )
    assert built.result.ok, "\n".join([built.result.error, *built.result.log_tail])
    manifest = built.result.manifest
    assert manifest is not None
    names = await env.layer_names(manifest.layers[-1].digest)
    for module in ("six.py", "pyjokes/__init__.py"):
        assert any(n.endswith(f"-packages/{module}") for n in names), (module, names)
    leaked = [
        n
        for n in names
        if n.startswith((".thaw-build", "root/.cache", "root/.config", "etc/pip.conf", "tmp/"))
        or n.endswith((".crt", ".pem", "pip.conf"))
    ]
    assert not leaked, leaked
    out = await env.run_in_image(
        manifest, ["/usr/bin/python3", "-c", "import six; print(six.__file__)"]
    )
    assert out.startswith("/usr/local/lib/python3"), out
