"""A 1-second Period on a warm container: how late do fires run?"""

import time

import thaw as modal

app = modal.App("bench-period")


@app.function(schedule=modal.Period(seconds=1), min_containers=1)
def tick() -> float:
    return time.time()
