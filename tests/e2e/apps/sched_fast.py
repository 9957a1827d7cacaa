"""A 2-second Period whose every run prints one line: counting the lines counts
the runs, so a fire that ran twice shows."""

import time

import thaw as modal

app = modal.App("sched-fast")


@app.function(schedule=modal.Period(seconds=2), min_containers=1)
def tick() -> float:
    print("sched-fast ran", flush=True)
    return time.time()
