"""enable_gpu_snapshot without enable_memory_snapshot: it would do nothing."""

import thaw

app = thaw.App("gpu-snap-alone")


@app.function(experimental_options={"enable_gpu_snapshot": True})
def alone() -> None:
    pass
