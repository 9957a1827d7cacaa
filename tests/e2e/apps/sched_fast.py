"""A 2-second Period whose every run prints one line: counting the lines counts
the runs, so a fire that ran twice shows."""

import time

import thaw as modal

app = modal.App("sched-fast")


@app.function(schedule=modal.Period(seconds=2), min_containers=1)
def tick() -> float:
    print(f"sched-fast ran {modal.current_function_call_id()}", flush=True)
    return time.time()
