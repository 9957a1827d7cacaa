"""Inputs that no container will answer: the app is stopped under them."""

import time

import thaw as modal

app = modal.App("unanswered")


@app.function()
def echo(x: int) -> int:
    return x


@app.function(max_containers=1)
def hold(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
