"""Volumes from local code: the gateway's routes and the SDK (thaw.Volume)
on real NATS, Postgres, the blob store and the volumes service. The SDK is
sync (it runs on its own loop), so it is called from a thread here."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import thaw as modal
from fixtures.gateway import (
    Gateway,
    gateway,  # noqa: F401 - a fixture
    settings,  # noqa: F401 - a fixture
    spec,
    unique,
)
from fixtures.volumes import running_volumes
from thaw.exception import Error, InvalidError, NotFoundError
from thaw.volume import FileEntryType
from thaw_core.config import Settings
from thaw_volumes.service import VolumesService

pytestmark = pytest.mark.timeout(180)
T = TypeVar("T")


@pytest.fixture
async def volumes(settings: Settings) -> AsyncIterator[VolumesService]:
    async with running_volumes(settings) as svc:
        yield svc


@pytest.fixture
def sdk(gateway: Gateway, volumes: VolumesService, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("THAW_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("THAW_TOKEN", gateway.token)
    monkeypatch.delenv("THAW_CONTAINER_ID", raising=False)
    return gateway


async def off_loop(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kw)


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def upload_and_read(tmp: Path, name: str) -> None:
    vol = modal.Volume.from_name(name, create_if_missing=True)
    big = tmp / "big.bin"
    big.write_bytes(os.urandom(9 << 20) + b"tail")  # three chunks
    src = tmp / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    with vol.batch_upload() as batch:
        batch.put_file(big, "/models/big.bin")
        batch.put_directory(src, "/docs")

    top = {(e.path, e.type) for e in vol.listdir("/")}
    assert top == {("models", FileEntryType.DIRECTORY), ("docs", FileEntryType.DIRECTORY)}
    deep = {e.path: e for e in vol.listdir("docs", recursive=True)}
    assert set(deep) == {"docs/a.txt", "docs/sub", "docs/sub/b.txt"}
    assert deep["docs/a.txt"].size == 5 and deep["docs/a.txt"].type == FileEntryType.FILE
    assert b"".join(vol.read_file("models/big.bin")) == big.read_bytes()

    with pytest.raises(Error, match="exist"), vol.batch_upload() as batch:
        batch.put_file(src / "a.txt", "docs/a.txt")
    with vol.batch_upload(force=True) as batch:
        batch.put_file(src / "sub" / "b.txt", "docs/a.txt")
    assert b"".join(vol.read_file("docs/a.txt")) == b"beta"

    vol.copy_files(["docs/a.txt", "models/big.bin"], "copies")
    assert {e.path for e in vol.listdir("copies")} == {"copies/a.txt", "copies/big.bin"}
    with pytest.raises(Error, match="directory"):
        vol.remove_file("docs")
    vol.remove_file("docs", recursive=True)
    vol.remove_file("copies/big.bin")
    assert {e.path for e in vol.listdir("/", recursive=True)} == {
        "models", "models/big.bin", "copies", "copies/a.txt"
    }  # fmt: skip
    with pytest.raises(NotFoundError):
        vol.listdir("docs")
    vol.reload()
    vol.commit()  # from local code: only checks the volume


async def test_upload_list_read_copy_remove_through_the_sdk(sdk: Gateway, tmp_path: Path) -> None:
    await off_loop(upload_and_read, tmp_path, unique("vol"))


def bad_input(name: str) -> None:
    with pytest.raises(NotFoundError, match="create_if_missing=True"):
        modal.Volume.from_name(name).listdir("/")
    vol = modal.Volume.from_name(name, create_if_missing=True)
    for bad in ("../x", "a/../../b"):
        with pytest.raises(InvalidError, match="climbs out"):
            vol.listdir(bad)
        with pytest.raises(InvalidError, match="climbs out"), vol.batch_upload() as batch:
            batch.put_file(__file__, bad)
    with pytest.raises(InvalidError, match="invalid volume name"):
        modal.Volume.from_name("no/slashes")
    modal.Volume.delete(name)
    with pytest.raises(NotFoundError):
        modal.Volume.delete(name)


async def test_bad_input_is_refused_clearly(sdk: Gateway) -> None:
    await off_loop(bad_input, unique("vol"))


async def test_routes_answer_curl_and_refuse_a_size_limit(sdk: Gateway, tmp_path: Path) -> None:
    name = unique("vol")
    status, made = await sdk.call("POST", "/v1/volumes", json={"name": name, "max_bytes": 8})
    assert status == 201 and made["name"] == name and made["max_bytes"] == 8
    status, body = await sdk.call("POST", "/v1/volumes", json={"name": name})
    assert status == 409
    (tmp_path / "f").write_bytes(b"0123456789")

    def over_the_limit() -> None:
        with modal.Volume.from_name(name).batch_upload() as batch:
            batch.put_file(tmp_path / "f", "f")

    with pytest.raises(Error, match="limit of 8"):
        await off_loop(over_the_limit)
    status, listed = await sdk.call("GET", f"/v1/volumes/{name}/entries?path=/")
    assert status == 200 and listed["entries"] == [] and listed["version"] == 0

    (tmp_path / "g").write_bytes(b"small")

    def small() -> None:
        with modal.Volume.from_name(name).batch_upload() as batch:
            batch.put_file(tmp_path / "g", "/g")

    await off_loop(small)
    async with sdk.http.get(
        f"{sdk.url}/v1/volumes/{name}/file?path=g", headers=sdk.headers()
    ) as resp:
        assert resp.status == 200 and await resp.read() == b"small"
    status, body = await sdk.call("GET", "/v1/volumes")
    assert name in [v["name"] for v in body]
    status, body = await sdk.call("DELETE", f"/v1/volumes/{name}")
    assert status == 200


def ephemeral_round_trip() -> str:
    with modal.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(__file__, "me.py")
        assert [e.path for e in vol.listdir("/")] == ["me.py"]
        name = vol.name
    with pytest.raises(NotFoundError):
        modal.Volume.from_name(name).listdir("/")
    return name


async def test_an_ephemeral_volume_lives_for_its_block(sdk: Gateway) -> None:
    await off_loop(ephemeral_round_trip)


async def test_a_deploy_names_a_missing_volume_and_two_mounts_at_one_path(sdk: Gateway) -> None:
    missing = unique("nope")
    status, body = await sdk.call(
        "POST", f"/v1/apps/{unique('app')}/deploy",
        json={"bundle_sha256": "0" * 64,
              "functions": [spec("f", volumes=[{"path": "/data", "name": missing}])]},
    )  # fmt: skip
    assert status == 400
    message = body["error"]["message"]
    assert f"volume {missing!r} at /data" in message and "create_if_missing=True" in message
    made = unique("made")
    status, body = await sdk.call(
        "POST", f"/v1/apps/{unique('app')}/deploy",
        json={"bundle_sha256": "0" * 64, "functions": [
            spec("f", volumes=[{"path": "/data", "name": made, "create_if_missing": True},
                               {"path": "/data", "name": made}])]},
    )  # fmt: skip
    assert status == 400 and "two volumes mounted at /data" in body["error"]["message"]
    status, _ = await sdk.call("GET", f"/v1/volumes/{made}")
    assert status == 200


def cli(*args: str) -> str:
    from click.testing import CliRunner
    from thaw.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_round_trip(tmp: Path, name: str) -> None:
    src = tmp / "tree"
    for i in range(300):
        (src / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 7}" / f"f{i}.txt").write_text(f"file {i}\n" * (i % 5))
    big = tmp / "big.bin"
    big.write_bytes(os.urandom(5 << 20))
    cli("volume", "create", name)
    cli("volume", "put", name, str(src), "/tree")
    cli("volume", "put", name, str(big), "/blobs/")
    listed = json.loads(cli("volume", "ls", name, "/", "--json"))
    assert {(e["path"], e["type"]) for e in listed} == {
        ("tree", "directory"),
        ("blobs", "directory"),
    }
    assert name in [v["name"] for v in json.loads(cli("volume", "list", "--json"))]
    out = tmp / "out"
    cli("volume", "get", name, "/tree", str(out))
    assert tree(out) == tree(src)
    cli("volume", "get", name, "blobs/big.bin", str(tmp / "big.copy"))
    assert (tmp / "big.copy").read_bytes() == big.read_bytes()
    cli("volume", "cp", name, "blobs/big.bin", "blobs/again.bin")
    cli("volume", "rm", name, "-r", "tree")
    left = json.loads(cli("volume", "ls", name, "/", "-r", "--json"))
    assert [e["path"] for e in left] == ["blobs", "blobs/again.bin", "blobs/big.bin"]
    cli("volume", "delete", name, "--yes")


async def test_cli_round_trip(sdk: Gateway, tmp_path: Path) -> None:
    await off_loop(cli_round_trip, tmp_path, unique("vol"))
