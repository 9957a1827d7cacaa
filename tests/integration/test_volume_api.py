"""Volumes from local code: the gateway's routes and the SDK (thaw.Volume)
on real NATS, Postgres, the blob store and the volumes service. The SDK is
sync (it runs on its own loop), so it is called from a thread here."""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import time
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
from thaw_agent.volume_cache import ChunkCache
from thaw_agent.volume_mount import MountedVolume
from thaw_core.blob import open_blob_store
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.volumes import VolumesClient
from thaw_core.volumes.refs import is_packed
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


async def test_every_method_has_an_aio_form_for_event_loops(sdk: Gateway, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    async with modal.Volume.ephemeral() as vol:
        async with vol.batch_upload() as batch:
            batch.put_file(tmp_path / "a.txt", "docs/a.txt")
        assert [e.path for e in await vol.listdir.aio("docs")] == ["docs/a.txt"]
        assert [e.path async for e in vol.iterdir.aio("/")] == ["docs", "docs/a.txt"]
        assert b"".join([p async for p in vol.read_file.aio("docs/a.txt")]) == b"alpha"
        await vol.copy_files.aio(["docs/a.txt"], "b.txt")
        await vol.remove_file.aio("docs", recursive=True)
        await vol.reload.aio()
        await vol.commit.aio()
        assert vol.version >= 3
        assert [e.path for e in await vol.listdir.aio("/", recursive=True)] == ["b.txt"]
        name = vol.name
    with pytest.raises(NotFoundError):
        await modal.Volume.from_name(name).hydrate.aio()
    made = await modal.Volume.from_name(name, create_if_missing=True).hydrate.aio()
    await modal.Volume.delete.aio(made.name)
    with pytest.raises(NotFoundError):
        await modal.Volume.delete.aio(made.name)


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


# ``thaw`` reporting its own peak RSS as it exits: VmHWM, which starts afresh
# at exec. (wait4's ru_maxrss also counts the forked child before its exec,
# when it shares the test process's memory: gigabytes late in the suite.)
_PEAK_RSS_THAW = """
import atexit, runpy, sys
report = sys.argv.pop(1)
def peak() -> None:
    with open("/proc/self/status") as status, open(report, "w") as f:
        f.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
atexit.register(peak)
runpy.run_module("thaw.cli", run_name="__main__", alter_sys=True)
"""


def cli_process(*args: str, tty: bool = False) -> tuple[str, int]:
    """``thaw`` in a process of its own (on a terminal with ``tty``): what it
    printed and its peak RSS in MiB."""
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    fd, report = tempfile.mkstemp(prefix="thaw-peak-rss-")
    os.close(fd)
    command = [sys.executable, "-c", _PEAK_RSS_THAW, report, *args]
    with tempfile.TemporaryFile() as out:
        leader, follower = pty.openpty() if tty else (-1, out.fileno())
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=follower,
                                stderr=follower)  # fmt: skip
        printed = bytearray()
        if tty:
            os.close(follower)
            with contextlib.suppress(OSError):  # EIO once the process has closed its side
                while piece := os.read(leader, 65536):
                    printed += piece
            os.close(leader)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        printed += out.read()
    text = printed.decode(errors="replace")
    assert proc.returncode == 0, text
    peak_kib = int(Path(report).read_text())
    os.unlink(report)
    return text, peak_kib // 1024


def same_files(a: Path, b: Path) -> bool:
    return filecmp.cmp(a, b, shallow=False)


def large_round_trip(tmp: Path, name: str) -> list[str]:
    big = tmp / "big.bin"
    with big.open("wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    small = tmp / "small"
    for i in range(10_000):
        (small / f"d{i % 100}").mkdir(parents=True, exist_ok=True)
        (small / f"d{i % 100}" / f"f{i}.txt").write_text(f"small file {i}\n" * (i % 7))
    cli("volume", "create", name)
    figures = []
    t0 = time.monotonic()
    printed, rss = cli_process("volume", "put", name, str(big), "/big.bin", tty=True)
    figures.append(f"put 1 GiB: {time.monotonic() - t0:.1f}s, peak RSS {rss} MiB")
    assert "put big.bin" in printed and "MB/s" in printed  # the progress bar was drawn
    assert rss < 400, f"put held {rss} MiB: a 1 GiB file must stream"
    t0 = time.monotonic()
    printed, _ = cli_process("volume", "put", name, str(small), "/small", tty=True)
    figures.append(f"put 10,000 files: {time.monotonic() - t0:.1f}s")
    # 10,000 files of a few bytes: a bar by files and steps, not by bytes.
    assert "put small: committing 10,000 files" in printed, printed[-2000:]

    top = json.loads(cli("volume", "ls", name, "/", "--json"))
    assert {(e["path"], e["type"], e["size"]) for e in top} >= {("big.bin", "file", 1 << 30)}
    assert {e["path"] for e in top} == {"big.bin", "small"}
    deep = json.loads(cli("volume", "ls", name, "small", "-r", "--json"))
    assert sum(e["type"] == "file" for e in deep) == 10_000

    t0 = time.monotonic()
    printed, rss = cli_process("volume", "get", name, "big.bin", str(tmp / "big.copy"), tty=True)
    figures.append(f"get 1 GiB: {time.monotonic() - t0:.1f}s, peak RSS {rss} MiB")
    assert "get big.bin" in printed and "MB/s" in printed
    assert rss < 400, f"get held {rss} MiB: a 1 GiB file must stream"
    assert same_files(big, tmp / "big.copy")
    t0 = time.monotonic()
    printed, _ = cli_process("volume", "get", name, "small", str(tmp / "small.copy"), tty=True)
    figures.append(f"get 10,000 files: {time.monotonic() - t0:.1f}s")
    assert "get small: 10,000/10,000 files" in printed, printed[-2000:]
    copied = sorted(p.relative_to(tmp / "small.copy") for p in (tmp / "small.copy").rglob("*.txt"))
    assert copied == sorted(p.relative_to(small) for p in small.rglob("*.txt"))
    assert all(same_files(small / p, tmp / "small.copy" / p) for p in copied)
    cli("volume", "delete", name, "--yes")
    return figures


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_cli_round_trip_of_a_1_gib_file_and_10000_small_files(
    sdk: Gateway,
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="thaw-vol-cli-", dir="/var/tmp"))
    try:
        figures = await off_loop(large_round_trip, tmp, unique("vol"))
    finally:
        await off_loop(shutil.rmtree, tmp, True)
    print("\n" + "\n".join(figures))


async def test_small_files_an_agent_packed_read_back_through_the_sdk_and_the_routes(
    sdk: Gateway, settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    name = unique("vol")
    blob = open_blob_store(settings.blob_url)  # the gateway's S3 store: range reads there
    client = VolumesClient(bus, blob)
    mount = MountedVolume(
        client,
        ChunkCache(tmp_path / "cache", blob),
        await client.ensure(name, create_if_missing=True),
        tmp_path / "data",
    )
    await mount.load()
    want = {f"d/f{i}.txt": f"packed {i} ".encode() * (i + 1) for i in range(12)}
    try:
        for rel, data in want.items():
            (mount.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (mount.root / rel).write_bytes(data)
        await mount.commit()
    finally:
        await mount.remove()  # an overlay, as root: unmounted
    _, entries = await client.entries(mount.volume.volume_id)
    assert all(is_packed(c) for e in entries for c in e.chunks)

    def read(path: str) -> bytes:
        return b"".join(modal.Volume.from_name(name).read_file(path))

    assert {p: await off_loop(read, p) for p in want} == want
    async with sdk.http.get(
        f"{sdk.url}/v1/volumes/{name}/file?path=d/f3.txt", headers=sdk.headers()
    ) as resp:
        assert resp.status == 200 and await resp.read() == want["d/f3.txt"]
    out = tmp_path / "got"
    await off_loop(cli, "volume", "get", name, "/d", str(out))
    assert tree(out) == {p.removeprefix("d/"): data for p, data in want.items()}


async def test_small_files_put_through_the_sdk_travel_in_packs_and_come_back_whole(
    sdk: Gateway, tmp_path: Path
) -> None:
    """A put of many small files is a few requests (packs), not one each, and
    a get reads them back in batches; the batch routes refuse bad input."""
    name = unique("vol")
    src = tmp_path / "src"
    want = {f"d{i % 3}/f{i}.txt": f"small {i}\n".encode() * (i % 5) for i in range(300)}
    want["same-a.txt"] = want["same-b.txt"] = b"twins\n"
    for rel, data in want.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "d0" / "f0.txt").chmod(0o600)

    def put() -> None:
        with modal.Volume.from_name(name, create_if_missing=True).batch_upload() as batch:
            batch.put_directory(src, "/up")

    await off_loop(put)
    status, listed = await sdk.call("GET", f"/v1/volumes/{name}/entries?path=/up&recursive=true")
    assert status == 200
    chunks = [c for e in listed["entries"] for c in e["chunks"]]
    assert chunks and all(is_packed(c) for c in chunks)
    assert len({c.split("@")[1].split(":")[0] for c in chunks}) == 1  # one pack for all
    out = tmp_path / "got"
    await off_loop(cli, "volume", "get", name, "/up", str(out))
    assert tree(out) == want
    assert (out / "d0" / "f0.txt").stat().st_mode & 0o777 == 0o600

    # One request for pieces of two files, in the order asked.
    refs = [e["chunks"][0] for e in listed["entries"] if e["chunks"]][:2]
    async with sdk.http.post(
        f"{sdk.url}/v1/volume-chunks:read", json={"refs": refs[::-1]}, headers=sdk.headers()
    ) as resp:
        assert resp.status == 200
        got = await resp.read()
    by_ref = {e["chunks"][0]: want[e["path"].removeprefix("up/")] for e in listed["entries"]
              if e["chunks"]}  # fmt: skip
    assert got == by_ref[refs[1]] + by_ref[refs[0]]
    for body, code in (
        ({"refs": ["not-a-ref"]}, 400),
        ({"refs": ["0" * 64]}, 404),
        ({"refs": ["0" * 64] * 5001}, 400),
    ):
        status, answer = await sdk.call("POST", "/v1/volume-chunks:read", json=body)
        assert status == code, answer
    async with sdk.http.put(
        f"{sdk.url}/v1/volume-packs/{'0' * 64}", data=b"not that", headers=sdk.headers()
    ) as resp:
        assert resp.status == 400 and "sha256" in (await resp.json())["error"]["message"]
