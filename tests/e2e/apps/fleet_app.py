"""Inputs that hold a container for a while, one at a time: a map needs several."""

import time

import thaw as modal

app = modal.App("fleet-app")


@app.function(max_containers=3)
def hold(i: int) -> int:
    time.sleep(0.3)
    return i
