"""Two functions on two images, to run side by side on one node."""

import os
from pathlib import Path

import thaw as modal

app = modal.App("img-pair")

with_six = modal.Image.debian_slim().pip_install("six").env({"WHICH": "six"})
with_marker = modal.Image.debian_slim().run_commands("echo marker > /marker").workdir("/srv")


def _look() -> dict[str, str]:
    import six  # the image's own, or else the runtime's copy

    return {
        "six": six.__file__,
        "marker": Path("/marker").read_text() if Path("/marker").exists() else "",
        "WHICH": os.environ.get("WHICH", ""),
        "cwd": os.getcwd(),
        "host": os.uname().nodename,
    }


@app.function(image=with_six)
def on_six() -> dict[str, str]:
    return _look()


@app.function(image=with_marker)
def on_marker() -> dict[str, str]:
    return _look()
