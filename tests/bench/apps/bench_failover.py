"""A map long enough that a node's agent can be killed in the middle of it."""

import time

import thaw as modal

app = modal.App("bench-failover")


@app.function(max_containers=4)
@modal.concurrent(max_inputs=16)
def step(i: int) -> int:
    time.sleep(0.02)
    return i
