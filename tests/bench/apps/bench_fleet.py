"""A map spread over the fleet's nodes: three containers, many inputs each."""

import thaw as modal

app = modal.App("bench-fleet")


@app.function(max_containers=3)
@modal.concurrent(max_inputs=8)
def work(x: int) -> int:
    # A little CPU per input, so that more nodes could share it out.
    return sum(i * i for i in range(2000)) + x
