"""An app on a built image: a pip package, a command's output, an env var and
a local file. ``IMG_HELLO`` changes the command (the rebuild test)."""

import os
from pathlib import Path

import thaw as modal

HELLO = os.environ.get("IMG_HELLO", "echo hi > /hello")

image = (
    modal.Image.debian_slim()
    .pip_install("six")
    .run_commands(HELLO)
    .env({"A": "1"})
    .add_local_file(Path(__file__).parent / "img_data.txt", "/data/greeting.txt")
)
app = modal.App("img-basic", image=image)


@app.function()
def inspect() -> dict[str, str]:
    import six

    return {
        "six": six.__file__,
        "hello": Path("/hello").read_text(),
        "data": Path("/data/greeting.txt").read_text(),
        "A": os.environ.get("A", ""),
        "cwd": os.getcwd(),
    }
