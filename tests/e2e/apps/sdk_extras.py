"""Functions for the SDK's runtime helpers: the current call's id (sync and
async inputs) and a function whose autoscaler the test changes."""

import thaw as modal

app = modal.App("sdk-extras")


@app.function()
def call_id() -> str | None:
    return modal.current_function_call_id()


@app.function()
async def async_call_id() -> str | None:
    return modal.current_function_call_id()


@app.function(scaledown_window=600)
def warm() -> int:
    return 1
