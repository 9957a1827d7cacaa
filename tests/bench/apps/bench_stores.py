"""Dict and Queue operations timed inside a container (tests/bench/test_store_bench.py):
the path through the agent socket, the agent and the gateway."""

import time

import thaw as modal

app = modal.App("bench-stores")


@app.function()
def dict_ops(name: str, n: int) -> dict:
    d = modal.Dict.from_name(name, create_if_missing=True)
    puts, gets = [], []
    for i in range(n):
        t = time.perf_counter()
        d[f"k{i}"] = {"i": i}
        puts.append(time.perf_counter() - t)
    for i in range(n):
        t = time.perf_counter()
        d[f"k{i}"]
        gets.append(time.perf_counter() - t)
    return {"put": puts, "get": gets}


@app.function()
def queue_drain(name: str, n: int, batch: int) -> float:
    """Seconds to take ``n`` items, ``batch`` at a time."""
    q = modal.Queue.from_name(name)
    t = time.perf_counter()
    got = 0
    while got < n:
        got += len(q.get_many(batch, timeout=30))
    return time.perf_counter() - t
