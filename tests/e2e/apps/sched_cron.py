"""Every minute, with a warm container so a fire runs as soon as it is published."""

import time

import thaw as modal

app = modal.App("sched-cron")


@app.function(schedule=modal.Cron("* * * * *"), min_containers=1)
def minutely() -> float:
    return time.time()
