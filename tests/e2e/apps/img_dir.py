"""An image made of local files: a directory (with an ignore pattern) and a module."""

import os
from pathlib import Path

import thaw as modal

image = (
    modal.Image.debian_slim()
    .add_local_dir(Path(__file__).parent / "img_tree", "/opt/tree", ignore=["*.log"])
    .add_local_python_source("img_helper")
)
app = modal.App("img-dir", image=image)


@app.function()
def listing() -> dict[str, object]:
    files = sorted(
        str(p.relative_to("/opt/tree")) for p in Path("/opt/tree").rglob("*") if p.is_file()
    )
    return {
        "files": files,
        "script_mode": os.stat("/opt/tree/sub/b.sh").st_mode & 0o777,
        "helper": Path("/root/img_helper.py").read_text(),
    }
