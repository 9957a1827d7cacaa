"""Dicts and queues used from containers (tests/e2e/test_dict_queue.py): a
fan-out whose workers write their results into a Dict, and a producer with
consumers sharing a Queue, each consumer recording what it took."""

import os
import queue

import thaw as modal
from thaw_core.contract import ENV_CONTAINER_ID

app = modal.App("dict-queue-e2e")


@app.function(max_containers=4)
def square_into(dict_name: str, i: int) -> int:
    modal.Dict.from_name(dict_name)[i] = {"square": i * i, "by": os.environ[ENV_CONTAINER_ID]}
    return i


@app.function()
def bulk_update(dict_name: str, n: int) -> int:
    """One update larger than a NATS message (the SDK sends it in pieces)."""
    d = modal.Dict.from_name(dict_name)
    d.update({f"k{i}": "x" * 2000 for i in range(n)})
    # Over the store's own limit: through the blob store, by way of the agent.
    d["big"] = bytes(range(256)) * 8192
    assert d["big"] == bytes(range(256)) * 8192
    return len(d)


@app.function()
def produce(queue_name: str, flags: str, n: int) -> int:
    q = modal.Queue.from_name(queue_name)
    for start in range(0, n, 100):
        q.put_many(range(start, min(start + 100, n)))
    modal.Dict.from_name(flags)["produced"] = n
    return n


@app.function(max_containers=3, timeout=900, retries=2)
def consume(queue_name: str, flags: str, log_name: str) -> int:
    """Take items one at a time until the producer is done and every item
    is taken for good; record each as "<container>:<n>" -> item."""
    q = modal.Queue.from_name(queue_name)
    done = modal.Dict.from_name(flags)
    log = modal.Dict.from_name(log_name)
    me = os.environ[ENV_CONTAINER_ID]
    n = 0
    while True:
        try:
            item = q.get(timeout=2)
        except queue.Empty:
            if "produced" in done and q.len() == 0:
                return n
            continue
        log[f"{me}:{n}"] = item
        n += 1
