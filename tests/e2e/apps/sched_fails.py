"""A scheduled function that fails: its failure shows in app show, logs and the call."""

import thaw as modal

app = modal.App("sched-fails")


@app.function(schedule=modal.Period(seconds=2))
def broken() -> None:
    raise RuntimeError("scheduled job broke")
