"""A function whose one container reserves most of its node's CPUs and
stays warm long after its call (to see it give way to a sandbox)."""

import os

import thaw as modal

app = modal.App("node-filler")

# All but half a core: whatever else the suite keeps warm at a floor fits
# beside it, a 1-core sandbox does not.
CORES = float(os.cpu_count() or 1)


@app.function(cpu=max(0.25, CORES - 0.5), scaledown_window=600)
def hold() -> str:
    return "held"
