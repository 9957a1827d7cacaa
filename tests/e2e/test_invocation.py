"""Deploy decorated code and call it, as a user does: `thaw deploy`, `thaw run`,
`Function.from_name(...).remote/map/spawn`, against gateway, scheduler and
node agents running as real processes with real runc containers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import thaw as modal
from fixtures.platform import Platform
from fixtures.wait import eventually

APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.usefixtures("use_platform")


@pytest.fixture(scope="module")
def behaviours(platform: Platform) -> None:
    platform.deploy("behaviours.py")


def test_core_pattern_runs_with_thaw_run(platform: Platform) -> None:
    out = platform.cli("run", f"{APPS / 'core_pattern.py'}::main")
    assert out.returncode == 0, out.stdout + out.stderr + platform.logs()
    assert "Completed 100 tasks" in out.stdout
    # `thaw run` apps are ephemeral: stopped once the entrypoint returns.
    apps = {a["name"]: a for a in platform.api("/v1/apps")}
    assert apps["core-pattern"]["state"] == "stopped"


def test_classes_example_enters_once_and_serves_methods(platform: Platform) -> None:
    platform.deploy("classes.py")
    Inference = modal.Cls.from_name("classes", "Inference")
    inference = Inference()
    assert inference.predict.remote([1.0, 2.0, 3.0]) == [2.0, 4.0, 6.0]
    stats = [inference.stats.remote() for _ in range(3)]
    # One warm container: enter ran once, every call saw its model.
    assert {s["loads"] for s in stats} == {1}


def test_map_of_1000_returns_every_result_in_order(behaviours: None) -> None:
    square = modal.Function.from_name("behaviours", "square")
    assert list(square.map(range(1000))) == [i * i for i in range(1000)]


def test_remote_exception_keeps_its_type_and_traceback(behaviours: None) -> None:
    boom = modal.Function.from_name("behaviours", "boom")
    with pytest.raises(PermissionError, match="quota exceeded after 7 requests") as info:
        boom.remote(7)
    remote_tb = str(info.value.__cause__)
    assert "behaviours.py" in remote_tb and "raise PermissionError" in remote_tb

    custom_boom = modal.Function.from_name("behaviours", "custom_boom")
    with pytest.raises(modal.exception.RemoteError) as custom:
        custom_boom.remote()
    assert "QuotaExceeded: over quota" in str(custom.value)


def test_timeout_stops_a_function_that_runs_too_long(behaviours: None) -> None:
    sleepy = modal.Function.from_name("behaviours", "sleepy")
    assert sleepy.remote(0.1) == "woke up"
    started = time.monotonic()
    with pytest.raises(modal.exception.FunctionTimeoutError):
        sleepy.remote(60)
    assert time.monotonic() - started < 30


def test_retries_rerun_a_failing_input_then_fail_the_call(platform: Platform, behaviours: None) -> None:
    always_fails = modal.Function.from_name("behaviours", "always_fails")
    call = always_fails.spawn()
    with pytest.raises(RuntimeError, match="still broken"):
        call.get(timeout=60)
    # The call's record shows the two retries: three attempts in all.
    assert platform.api(f"/v1/calls/{call.object_id}")["attempts"] == 3


def test_a_container_that_exits_is_one_failed_attempt_per_retry(
    platform: Platform, behaviours: None
) -> None:
    """``os._exit(3)`` under an input: its attempt failed, the retry (retries=1)
    runs in a fresh container and fails the same way, and the caller hears a
    clear error, not silence while the input is redelivered again and again."""
    hard_exit = modal.Function.from_name("behaviours", "hard_exit")
    call = hard_exit.spawn(3)
    with pytest.raises(modal.exception.RemoteError, match="the container died running this input"):
        call.get(timeout=180)
    assert platform.api(f"/v1/calls/{call.object_id}")["attempts"] == 2


def test_async_function_and_spawn(behaviours: None) -> None:
    async_double = modal.Function.from_name("behaviours", "async_double")
    assert async_double.remote(21) == 42
    calls = [async_double.spawn(i) for i in range(5)]
    assert [c.get(timeout=60) for c in calls] == [0, 2, 4, 6, 8]
    again = modal.FunctionCall.from_id(calls[3].object_id)
    assert again.get(timeout=10) == 6


def test_scales_from_zero_and_back_to_zero(platform: Platform, behaviours: None) -> None:
    def containers() -> list[dict[str, Any]]:
        body = platform.api("/v1/containers")
        return [c for c in body["containers"] if c["app"] == "behaviours" and c["function"] == "briefly"]

    assert containers() == []
    briefly = modal.Function.from_name("behaviours", "briefly")
    assert briefly.remote(1) == 2
    # The container list follows node heartbeats, a moment behind.
    deadline = time.monotonic() + 10
    while not containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(containers()) == 1
    deadline = time.monotonic() + 30
    while containers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers() == [], "still running after scaledown_window"


async def test_killing_a_node_mid_map_loses_nothing(platform_factory, monkeypatch) -> None:
    p: Platform = await platform_factory(agents=("node-a", "node-b"))
    monkeypatch.setenv("THAW_GATEWAY_URL", p.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", p.token)
    await asyncio.to_thread(p.deploy, "chaos.py")
    work = modal.Function.from_name("chaos", "work")

    results: list[int] = []
    errors: list[BaseException] = []

    def run_map() -> None:
        try:
            results.extend(work.map(range(200)))
        except BaseException as e:  # noqa: BLE001 - surfaced by the assertions below
            errors.append(e)

    mapper = threading.Thread(target=run_map)
    mapper.start()

    def busy_on(node: str) -> bool:
        body = p.api("/v1/containers")
        return any(c["node_id"] == node and c["inflight"] > 0 for c in body["containers"])

    deadline = time.monotonic() + 60
    while not busy_on("node-a") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert busy_on("node-a"), "node-a never ran any input\n" + p.logs()
    p.agent("node-a").kill()
    # Restarted as a supervisor would: it removes the containers its previous
    # life left running and hands back the inputs they held.
    p.add_agent("node-a", wait=False)

    await asyncio.to_thread(mapper.join, 180)
    assert not mapper.is_alive(), "map did not finish after the node died\n" + p.logs()
    assert errors == []
    assert results == [i * i for i in range(200)]
    log = p.agent("node-a").log_path

    def handed_back() -> bool:
        return "handed back inputs a previous agent held" in log.read_text(errors="replace")

    await eventually(handed_back, 60, "the restarted agent handing back its inputs")


def test_readme_example_runs_beside_its_deployment(platform: Platform) -> None:
    """The README's flow: deploy, then `thaw run` the same file. The run gets
    an app of its own and the deployment is left as it was."""
    example = Path(__file__).parents[2] / "examples" / "hello.py"
    deployed = platform.cli("deploy", str(example))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    out = platform.cli("run", f"{example}::main", "--n", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "squares: [0, 1, 4, 9]" in out.stdout
    assert "hello, thaw!" in out.stdout
    apps = platform.api("/v1/apps")
    hello = [a for a in apps if a["name"] == "hello"]
    assert [(a["state"], a["version"], a["ephemeral"]) for a in hello] == [("deployed", 1, False)]
    runs = [a for a in apps if a["name"].startswith("hello-run-")]
    assert [(a["state"], a["ephemeral"]) for a in runs] == [("stopped", True)]


async def test_another_language_invokes_over_nats(
    platform: Platform, behaviours: None, tmp_path: Path
) -> None:
    """What a Go or Node.js service does: publish an Invoke as plain JSON (bytes
    fields base64, as proto/ says) and read the Result on thaw.result.<id>,
    logged in as an invoke client of the app."""
    import base64
    import uuid

    import nats
    from fixtures.nats import invoke_client
    from thaw_core.nats_auth import connect_options, read_credential

    url = platform.base_env["THAW_NATS_URL"]
    creds = await invoke_client(url, ["behaviours"], tmp_path)
    prefix = read_credential(creds).call_id_prefix
    nc = await nats.connect(url, **connect_options(creds))
    try:
        js = nc.jetstream()

        async def invoke(args: str, **extra: Any) -> dict[str, Any]:
            call_id = f"{prefix}{uuid.uuid4().hex}"
            sub = await nc.subscribe(f"thaw.result.{call_id}")
            event = {
                "type": "invoke", "call_id": call_id, "app": "behaviours",
                "function": "square", "codec": "json", "args": args, **extra,
            }  # fmt: skip
            await js.publish(
                "thaw.invoke.behaviours.square", json.dumps(event).encode(),
                headers={"Nats-Msg-Id": call_id},
            )  # fmt: skip
            msg = await sub.next_msg(timeout=60)
            await sub.unsubscribe()
            return json.loads(msg.data)

        good = base64.b64encode(json.dumps({"args": [7], "kwargs": {}}).encode()).decode()
        result = await invoke(good)
        assert result["status"] == "success", result
        assert json.loads(base64.b64decode(result["value"])) == 49

        # Arguments that are not what the function takes: a failure result
        # that says so, not a lost input.
        bad = base64.b64encode(json.dumps({"args": ["x", "y"], "kwargs": {}}).encode()).decode()
        result = await invoke(bad)
        assert result["status"] == "failure" and "TypeError" in result["error"], result

        # A malformed event (a field the contract does not have) is refused
        # with an error result naming the problem; the caller is not left waiting.
        result = await invoke(good, priority="high")
        assert result["status"] == "failure" and "priority" in result["error"], result
    finally:
        await nc.close()
