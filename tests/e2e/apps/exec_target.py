"""A function whose container stays up, for `thaw container exec`."""

import thaw as modal

app = modal.App("exec-target")


@app.function(min_containers=1)
def ping() -> str:
    return "pong"
