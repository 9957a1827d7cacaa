"""Snapshot bench (a): nothing to initialise; the floor of start-up cost."""

import thaw as modal

app = modal.App("snap-trivial")


@app.cls(enable_memory_snapshot=True)
class Model:
    @modal.enter(snap=True)
    def load(self):
        self.ready = True

    @modal.method()
    def run(self, x):
        return x + 1
