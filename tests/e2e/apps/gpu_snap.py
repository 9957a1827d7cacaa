"""A function asking for GPU memory snapshots, deployed on a fleet that cannot
take them (no GPU, no cuda-checkpoint): its snapshot is a CPU one."""

import thaw

app = thaw.App("gpu-snap")


@app.function(enable_memory_snapshot=True, experimental_options={"enable_gpu_snapshot": True})
def snapped(x: int) -> int:
    return x + 1
