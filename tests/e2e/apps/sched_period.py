"""A 5-second Period (tests/e2e/test_schedules.py)."""

import time

import thaw as modal

app = modal.App("sched-period")


@app.function(schedule=modal.Period(seconds=5))
def tick() -> float:
    print(f"sched-period ran {modal.current_function_call_id()}", flush=True)
    return time.time()
