"""A function whose calls the tracing test follows."""

import thaw as modal

app = modal.App("traced")


@app.function()
def double(x: int) -> int:
    return 2 * x
