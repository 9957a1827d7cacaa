"""No-op functions: what a call costs when the work costs nothing."""

import thaw as modal

app = modal.App("bench-noop")


@app.function(min_containers=1)
def echo(x):
    return x


@app.function(max_containers=2)
@modal.concurrent(max_inputs=64)
def echo_wide(x):
    return x
