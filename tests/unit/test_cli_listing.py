"""Lists as a pipe sees them: one row per line, every value whole, a column
that says an app is ephemeral, and --json."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest
from click.testing import CliRunner, Result
from fixtures.fake_gateway import FakeGateway
from thaw.cli import main
from thaw.cli._listing import plain_lines
from thaw.client import use_transport
from thaw_core.api import ContainerInfo, ContainersResponse, NodeInfo, SecretInfo
from thaw_core.schema import GpuInfo

LONG = "probe-long-running-app-with-a-name-that-a-table-would-cut-short"

APP = """
import thaw

app = thaw.App("{name}")


@app.function()
def square(x: int) -> int:
    return x * x
"""


class ListingGateway(FakeGateway):
    """The fake gateway, with one container, one snapshot and one secret to list."""

    LISTS: ClassVar[dict[str, bytes]] = {
        "/v1/containers": msgspec.json.encode(
            ContainersResponse(
                containers=[
                    ContainerInfo(
                        container_id="ct-" + "0123456789abcdef" * 2,
                        app=LONG,
                        function="f",
                        version=1,
                        state="ready",
                        node_id="node-a",
                        restored=True,
                    )
                ]
            )
        ),
        "/v1/snapshots": b"[]",
        "/v1/snapshot-coverage": b"[]",
        "/v1/nodes": msgspec.json.encode(
            [
                NodeInfo(
                    node_id="gpu-node",
                    state="ready",
                    cores=16,
                    memory_mb=64000,
                    free_cores=12.5,
                    free_memory_mb=60000,
                    containers=2,
                    fingerprint_id="fp-1a2b",
                    gpus=[
                        GpuInfo(index=0, name="NVIDIA A10G", memory_mb=23028, container_id="ct-1"),
                        GpuInfo(index=1, name="NVIDIA A10G", memory_mb=23028),
                    ],
                ),
                NodeInfo(node_id="cpu-node", state="dead", cores=2, memory_mb=24000),
            ]
        ),
        "/v1/secrets": msgspec.json.encode([SecretInfo(name="db", keys=["USER", "PASSWORD"])]),
    }

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        route = path.partition("?")[0]
        if method == "GET" and route in self.LISTS:
            return 200, self.LISTS[route]
        return await super().request(method, path, body, content_type)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = ListingGateway()
    with use_transport(fake):
        yield fake


def thaw(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _deploy(tmp_path: Path, name: str, *, ephemeral: bool) -> None:
    module = f"listing_{name.replace('-', '_')}"
    path = tmp_path / f"{module}.py"
    path.write_text(textwrap.dedent(APP.format(name=name)))
    try:
        from thaw._sync import background_loop
        from thaw.app import find_apps
        from thaw.deploy import app_bundle, deploy_bundle, import_source

        (app,) = find_apps(import_source(str(path))).values()
        background_loop().run(deploy_bundle(name, app, app_bundle(app), ephemeral=ephemeral))
    finally:
        sys.modules.pop(module, None)


def test_plain_lines_keep_every_value_whole_on_one_line() -> None:
    lines = plain_lines(["id", "note"], [["ap-1", "first\nsecond  line"], ["ap-22", ""]])
    assert lines == ["id     note", "ap-1   first second line", "ap-22  -"]


def test_piped_app_list_feeds_grep_awk_xargs(gateway: FakeGateway, tmp_path: Path) -> None:
    _deploy(tmp_path, LONG, ephemeral=True)
    _deploy(tmp_path, "kept", ephemeral=False)
    out = thaw("app", "list").output
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["id", "name", "state", "kind"]
    assert any(LONG in row for row in rows), out
    # The pipeline: grep ephemeral | awk '{print $1}' | xargs thaw app stop
    ids = [row.split()[0] for row in rows if "ephemeral" in row]
    assert ids == [f"ap-{LONG}"]
    for app_id in ids:
        assert thaw("app", "stop", app_id).exit_code == 0
    assert gateway.stopped == [LONG]


def test_every_list_takes_json(gateway: FakeGateway, tmp_path: Path) -> None:
    _deploy(tmp_path, "jsonapp", ephemeral=False)
    apps = json.loads(thaw("app", "list", "--json").output)
    assert [(a["app_id"], a["name"], a["ephemeral"]) for a in apps] == [
        ("ap-jsonapp", "jsonapp", False)
    ]
    containers = json.loads(thaw("container", "list", "--json").output)
    assert containers[0]["node_id"] == "node-a"
    assert json.loads(thaw("snapshot", "list", "--json").output) == []
    assert json.loads(thaw("secret", "list", "--json").output)[0]["keys"] == ["USER", "PASSWORD"]


def test_piped_container_and_secret_lists_show_whole_values(gateway: FakeGateway) -> None:
    (header, row) = thaw("container", "list").output.splitlines()
    assert header.split()[0] == "container"
    assert row.split()[:2] == ["ct-" + "0123456789abcdef" * 2, LONG]
    assert row.endswith("restored from snapshot")
    assert thaw("secret", "list").output.splitlines()[1].split()[:2] == ["db", "USER,PASSWORD"]
    assert thaw("snapshot", "list").output == ""


def test_logs_take_a_container_filter(gateway: FakeGateway, tmp_path: Path) -> None:
    _deploy(tmp_path, "logged", ephemeral=False)
    assert "line 1" in thaw("app", "logs", "logged", "--container", "ct-a").output
    assert "line 1" not in thaw("app", "logs", "logged", "--container", "ct-zzz").output
    assert "line 1" not in thaw("app", "logs", "logged", "--since", "2099-01-01T00:00").output
    assert thaw("app", "logs", "logged", "--since", "yesterday").exit_code == 2


def test_call_show_and_cancel(gateway: FakeGateway, tmp_path: Path) -> None:
    _deploy(tmp_path, "called", ephemeral=False)
    import cloudpickle
    from thaw._sync import background_loop
    from thaw.client import CallTarget, current

    payload = cloudpickle.dumps(((4,), {}))
    accepted = background_loop().run(
        current().call(CallTarget("called", "square"), payload, wait_s=0)
    )
    cancelled = thaw("call", "cancel", accepted.call_id)
    assert cancelled.exit_code == 0 and "cancelling" in cancelled.output, cancelled.output
    shown = json.loads(thaw("call", "show", accepted.call_id, "--json").output)
    assert (shown["call_id"], shown["status"]) == (accepted.call_id, "cancelled")
    plain = thaw("call", "show", accepted.call_id).output
    assert "cancelled" in plain and "cancelled by the client" in plain


def test_node_list_shows_what_each_node_has_free_of_its_total(gateway: FakeGateway) -> None:
    header, gpu, cpu = thaw("node", "list").output.splitlines()
    assert header.split()[:2] == ["node", "state"]
    assert gpu.split()[:7] == [
        "gpu-node",
        "ready",
        "12.5/16",
        "60000/64000",
        "MiB",
        "1/2",
        "NVIDIA",
    ]
    assert gpu.split()[7:11] == ["A10G", "2", "fp-1a2b", "-"]  # ..., containers, class, seen
    assert cpu.split()[:7] == ["cpu-node", "dead", "0/2", "0/24000", "MiB", "-", "0"]
    nodes = json.loads(thaw("node", "list", "--json").output)
    assert nodes[0]["gpus"][0]["container_id"] == "ct-1" and nodes[0]["containers"] == 2
