"""The platform guide's "Core Pattern", run against thaw with ``import thaw as modal``.

Differences from the seed, until their issues land: ``gpu=None`` (CI has no
GPU), and no torch in the image (the default image is the shared Debian
rootfs), so the task body does not import it.
"""

import thaw as modal

app = modal.App("core-pattern")
image = modal.Image.debian_slim()


@app.function(image=image, gpu=None, timeout=600)
def gpu_task(seed: int) -> dict:
    return {"seed": seed, "status": "done"}


@app.local_entrypoint()
def main():
    # Parallel execution across the container pool
    tasks = [(i,) for i in range(100)]
    results = list(gpu_task.starmap(tasks))
    assert results == [{"seed": i, "status": "done"} for i in range(100)], results[:3]
    print(f"Completed {len(results)} tasks")
