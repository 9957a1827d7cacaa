"""A class whose expensive start is captured in a memory snapshot
(tests/e2e/test_snapshots.py): snap=True builds state and records the pid and
a random draw it ran with, snap=False counts how often it ran."""

import os
import random
import time

import thaw as modal

app = modal.App("snap-counter")


@app.cls(enable_memory_snapshot=True)
class Snapped:
    @modal.enter(snap=True)
    def load(self):
        self.table = {i: str(i) for i in range(300_000)}
        # An expensive start, as a snapshot exists to skip: without it a
        # restore is barely faster than this app's cold start, and the catalog
        # rightly stops using a snapshot whose restores are no faster.
        time.sleep(2.0)
        self.snap_pid = os.getpid()
        self.snap_draw = random.random()
        self.restores = 0

    @modal.enter(snap=False)
    def setup(self):
        self.restores += 1

    @modal.method()
    def state(self):
        return {
            "table": len(self.table),
            "snap_pid": self.snap_pid,
            "snap_draw": self.snap_draw,
            "restores": self.restores,
            "draw": random.random(),
            "container": os.environ["THAW_CONTAINER_ID"],
        }
