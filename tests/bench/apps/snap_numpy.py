"""Snapshot bench (d): a class whose initialisation takes 4 s and leaves
200 MB of numpy state (25M float64), the shape of a slow set-up (a download,
a compile, a preprocessing pass) that a restore skips."""

import time

import thaw as modal

app = modal.App("snap-numpy")

INIT_S = 4.0


@app.cls(enable_memory_snapshot=True)
class Model:
    @modal.enter(snap=True)
    def load(self):
        started = time.monotonic()
        import numpy as np

        self.state = np.random.default_rng(0).standard_normal(25_000_000)
        # The rest of the 4 s: work whose result is already in the state.
        time.sleep(max(0.0, INIT_S - (time.monotonic() - started)))

    @modal.method()
    def run(self, x):
        return float(self.state[:1000].sum()) + x
