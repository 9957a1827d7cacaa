"""The guide's volume patterns (tests/e2e/test_volumes.py): a batch that
writes results without committing, two containers committing at once, a
checkpoint that survives its container's kill -9, and a snapshotted class
that reads what was committed after its snapshot."""

import os
import random
import threading
import time

import thaw as modal

app = modal.App("volumes-e2e")
results = modal.Volume.from_name("e2e-results", create_if_missing=True)
shared = modal.Volume.from_name("e2e-shared", create_if_missing=True)
checkpoints = modal.Volume.from_name("e2e-checkpoints", create_if_missing=True)
snapvol = modal.Volume.from_name("e2e-snapshot", create_if_missing=True)


@app.function(volumes={"/data": results}, scaledown_window=2)
def write_result(i: int) -> int:
    # No commit: the platform commits when the container goes.
    with open(f"/data/result_{i}.txt", "w") as f:
        f.write(f"result {i}")
    return i


@app.function(volumes={"/data": results})
def read_results() -> dict[str, str]:
    out = {}
    for name in os.listdir("/data"):
        with open(f"/data/{name}") as f:
            out[name] = f.read()
    return out


@app.function(volumes={"/shared": shared}, scaledown_window=2)
def commit_together(name: str, others: list[str]) -> list[str]:
    """Say we are here, wait (reloading) until every other caller is too,
    then write our own file and commit at the same moment as they do."""
    open(f"/shared/here_{name}", "w").close()
    shared.commit()
    deadline = time.monotonic() + 120
    while not all(os.path.exists(f"/shared/here_{o}") for o in others):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{others} never arrived")
        time.sleep(0.05)
        shared.reload()
    with open(f"/shared/{name}.txt", "w") as f:
        f.write(name * 1000)
    shared.commit()
    return sorted(os.listdir("/shared"))


@app.function(
    volumes={"/ckpt": checkpoints}, retries=modal.Retries(max_retries=2, initial_delay=0.1)
)
def resumable(job: str) -> str:
    path = f"/ckpt/{job}.step"
    if os.path.exists(path):
        with open(path) as f:
            return f"resumed from {f.read()}"
    with open(path, "w") as f:
        f.write("step 1")
    checkpoints.commit()
    # Killed from outside now (kill -9 of the container's process).
    threading.Event().wait(600)
    return "not killed"


@app.function(volumes={"/ckpt": checkpoints})
def open_for_writing_blocks_reload(job: str) -> str:
    with open(f"/ckpt/{job}.open", "w") as f:
        f.write("x")
        try:
            checkpoints.reload()
        except Exception as e:  # noqa: BLE001 - the test reads the message
            return f"{type(e).__name__}: {e}"
    return "reloaded"


@app.cls(volumes={"/snap": snapvol}, enable_memory_snapshot=True)
class Snapped:
    @modal.enter(snap=True)
    def load(self):
        # Drawn once per process the snapshot caught: a restore shows the
        # snapshot's draw, a cold start a new one (the pid is 1 in both).
        self.snap_draw = random.random()
        # An expensive start, as a snapshot exists to skip: without it a
        # restore is barely faster than this app's cold start, and the catalog
        # rightly stops using a snapshot whose restores are no faster.
        time.sleep(2.0)

    @modal.method()
    def read(self, name: str) -> dict:
        try:
            with open(f"/snap/{name}") as f:
                content = f.read()
        except FileNotFoundError:
            content = None
        return {
            "content": content,
            "snap_draw": self.snap_draw,
            "container": os.environ["THAW_CONTAINER_ID"],
        }
