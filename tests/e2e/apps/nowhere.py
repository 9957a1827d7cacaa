"""Functions no node of a CPU-only test fleet can run (a GPU it lacks, more
memory than it has), beside one it can."""

import thaw

app = thaw.App("nowhere")


@app.function(gpu="H100")
def on_h100() -> str:
    return "ran"


@app.function(memory=64 * 1024 * 1024)  # 64 TiB
def huge() -> str:
    return "ran"


@app.function()
def fine() -> str:
    return "ran"
