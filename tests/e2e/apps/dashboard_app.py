"""Functions the dashboard test calls: one prints a line it looks for in the
page's live logs, one fails so that its traceback shows."""

import thaw as modal

app = modal.App("dashboard")


@app.function()
def greet(who: str) -> str:
    print(f"dashboard says hello to {who}", flush=True)
    return f"hello {who}"


@app.function()
def broken() -> None:
    raise ValueError("the dashboard shows this traceback")
