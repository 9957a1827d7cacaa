"""What tests/e2e/test_forged_results.py calls while it forges results."""

import thaw as modal

app = modal.App("forged-results")


@app.function()
def square(x: int) -> int:
    return x * x
