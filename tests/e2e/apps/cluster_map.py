"""A map long enough that a nats-server of the cluster can be killed in the middle of it."""

import time

import thaw as modal

app = modal.App("cluster-map")


@app.function(max_containers=2)
@modal.concurrent(max_inputs=32)
def square(i: int) -> int:
    time.sleep(0.01)
    return i * i
