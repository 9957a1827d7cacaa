"""What the Node.js and curl examples call: JSON in, JSON out."""

import thaw as modal

app = modal.App("other-languages")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def refuse(reason: str) -> None:
    raise ValueError(reason)
