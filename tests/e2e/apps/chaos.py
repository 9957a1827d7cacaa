"""A map long enough that a node can be killed in the middle of it."""

import time

import thaw as modal

app = modal.App("chaos")


@app.function(max_containers=4)
@modal.concurrent(max_inputs=4)
def work(i: int) -> int:
    time.sleep(0.2)
    return i * i
