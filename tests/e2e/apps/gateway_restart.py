"""A map long enough that the gateway can be killed in the middle of it,
and a call that outlasts a gateway restart."""

import time

import thaw as modal

app = modal.App("gateway-restart")


@app.function(max_containers=1)
@modal.concurrent(max_inputs=32)
def square(i: int) -> int:
    time.sleep(0.05)
    return i * i


@app.function()
def slow(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x + 1
