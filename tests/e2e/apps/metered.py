"""A function whose calls the metrics test counts."""

import thaw as modal

app = modal.App("metered")


@app.function()
def double(x: int) -> int:
    return 2 * x


@app.function()
def fails() -> None:
    raise ValueError("counted as a failure")
