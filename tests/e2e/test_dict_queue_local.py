"""``thaw.Dict`` and ``thaw.Queue`` from local code, on the real stack: the
mapping API, JSON and pickled keys and values, limits, ephemeral objects,
partitions, blocking gets, and the CLI that reads them."""

from __future__ import annotations

import asyncio
import json
import queue
import urllib.request
from fractions import Fraction

import pytest
import thaw as modal
from fixtures.platform import Platform
from thaw_core import contract


def test_dict_mapping_api(use_platform: Platform) -> None:
    d = modal.Dict.from_name("local-mapping", create_if_missing=True)
    d.clear()
    d["a"] = 1
    d[("tuple", 2)] = {"nested": [1, 2.5, None]}
    d[7] = Fraction(1, 3)
    assert d["a"] == 1 and d.get(("tuple", 2)) == {"nested": [1, 2.5, None]}
    assert d[7] == Fraction(1, 3)
    assert "a" in d and "zz" not in d and d.contains(7)
    assert d.get("zz", "dflt") == "dflt"
    with pytest.raises(KeyError):
        d["zz"]
    assert d.put("a", 2, skip_if_exists=True) is False and d["a"] == 1
    assert d.put("b", 2, skip_if_exists=True) is True
    d.update({"c": 3}, e="five")
    assert d.len() == len(d) == 6
    assert d.pop("b") == 2 and d.pop("b", None) is None
    with pytest.raises(KeyError):
        d.pop("b")
    assert dict(d.items()) == {
        "a": 1, ("tuple", 2): {"nested": [1, 2.5, None]}, 7: Fraction(1, 3), "c": 3, "e": "five"
    }  # fmt: skip
    assert set(d.keys()) == {"a", ("tuple", 2), 7, "c", "e"}
    assert sorted(map(str, d.values())) == sorted(map(str, [1, {"nested": [1, 2.5, None]},
                                                            Fraction(1, 3), 3, "five"]))  # fmt: skip
    d.clear()
    assert len(d) == 0 and list(d.items()) == []


def test_dict_plain_values_are_json_for_other_languages(use_platform: Platform) -> None:
    d = modal.Dict.from_name("local-json", create_if_missing=True)
    d["greeting"] = {"text": "hello", "n": [1, 2]}
    body = json.dumps({"type": "dict_get", "name": "local-json", "key": "s.greeting"}).encode()
    req = urllib.request.Request(
        use_platform.gateway_url + "/v1/stores",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {use_platform.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        reply = json.loads(r.read())
    import base64

    assert json.loads(base64.b64decode(reply["value"])) == {"text": "hello", "n": [1, 2]}


def test_dict_many_entries_iterate_in_pages(use_platform: Platform) -> None:
    with modal.Dict.ephemeral() as d:
        d.update({f"k{i}": "x" * 2000 for i in range(1200)})
        assert len(d) == 1200
        assert sorted(d.keys()) == sorted(f"k{i}" for i in range(1200))
        name = d.name
    with pytest.raises(modal.exception.NotFoundError, match=name):
        modal.Dict.from_name(name).len()
    with pytest.raises(modal.exception.NotFoundError, match=name):
        modal.Dict.from_name(name).get("k1")
    with pytest.raises(modal.exception.NotFoundError, match=name):
        modal.Dict.from_name(name)["k1"] = 1


def test_dict_limits_and_missing(use_platform: Platform) -> None:
    with pytest.raises(modal.exception.NotFoundError, match="no-such-dict"):
        modal.Dict.from_name("no-such-dict")["k"]
    d = modal.Dict.from_name("local-limits", create_if_missing=True)
    # Past the store's own limit, a value goes through the blob store.
    big = bytes(range(256)) * (contract.STORE_MAX_VALUE_BYTES // 128)
    d["big"] = big
    assert d["big"] == big and dict(d.items())["big"] == big
    limit = contract.STORE_BLOB_MAX_BYTES
    with pytest.raises(modal.exception.RequestSizeError, match=str(limit)):
        d["huge"] = b"x" * (limit + 1)
    with pytest.raises(modal.exception.RequestSizeError, match="key"):
        d["k" * 1000 + "!"] = 1
    assert "huge" not in d
    with modal.Queue.ephemeral() as q:
        q.put_many([big, "small"])
        assert q.get_many(2) == [big, "small"]


def test_dict_aio(use_platform: Platform) -> None:
    async def main() -> list[object]:
        async with modal.Dict.ephemeral() as d:
            await d.put.aio("x", 41)
            got = [await d.get.aio("x"), await d.len.aio()]
            got.append([k async for k in d.keys.aio()])
        with pytest.raises(modal.exception.NotFoundError):
            await d.len.aio()
        return got

    assert asyncio.run(main()) == [41, 1, ["x"]]


def test_queue_api_and_partitions(use_platform: Platform) -> None:
    with modal.Queue.ephemeral() as q:
        q.put(1)
        q.put_many([2, {"three": 3}, (4,)])
        q.put("p", partition="side")
        assert q.len() == 4 and q.len(partition="side") == 1 and q.len(total=True) == 5
        assert list(q.iterate()) == [1, 2, {"three": 3}, (4,)]
        assert q.get() == 1
        assert q.get_many(10) == [2, {"three": 3}, (4,)]
        assert q.get(block=False) is None
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)
        assert q.get(partition="side") == "p"
        q.put_many(range(5))
        q.clear()
        assert q.len() == 0
        with pytest.raises(modal.exception.InvalidError, match="partition_ttl"):
            q.put(1, partition_ttl=60)
        assert q.len() == 0


def test_queue_blocking_get_wakes_on_put(use_platform: Platform) -> None:
    async def main() -> object:
        q = modal.Queue.from_name("local-blocking", create_if_missing=True)
        await q.clear.aio()
        getter = asyncio.ensure_future(q.get.aio(timeout=60))
        # A getter that does not wait is answered while another one waits.
        nothing = await q.get.aio(block=False)
        await q.put.aio("late")
        return nothing, await getter

    assert asyncio.run(main()) == (None, "late")


def test_cli_dict_and_queue(use_platform: Platform) -> None:
    d = modal.Dict.from_name("cli-dict", create_if_missing=True)
    d["k"] = "v"
    q = modal.Queue.from_name("cli-queue", create_if_missing=True)
    q.clear()
    q.put_many(["a", "b"])
    out = use_platform.cli("dict", "list")
    assert out.returncode == 0 and "cli-dict" in out.stdout, out.stdout + out.stderr
    out = use_platform.cli("dict", "items", "cli-dict")
    assert out.returncode == 0 and "'k'" in out.stdout and "'v'" in out.stdout, out.stdout
    out = use_platform.cli("dict", "get", "cli-dict", "k")
    assert out.returncode == 0 and out.stdout.strip() == "'v'", out.stdout + out.stderr
    out = use_platform.cli("queue", "peek", "cli-queue", "5")
    assert out.returncode == 0 and out.stdout.split() == ["'a'", "'b'"], out.stdout + out.stderr
    out = use_platform.cli("queue", "len", "cli-queue")
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stdout + out.stderr
    out = use_platform.cli("queue", "list")
    assert out.returncode == 0 and "cli-queue" in out.stdout
    assert use_platform.cli("queue", "clear", "cli-queue").returncode == 0
    assert q.len() == 0
    assert use_platform.cli("dict", "clear", "cli-dict").returncode == 0
    assert len(d) == 0
    assert use_platform.cli("dict", "delete", "cli-dict", "--yes").returncode == 0
    assert use_platform.cli("queue", "delete", "cli-queue", "--yes").returncode == 0
    out = use_platform.cli("dict", "get", "cli-dict", "k")
    assert out.returncode != 0 and "cli-dict" in out.stderr, out.stdout + out.stderr
