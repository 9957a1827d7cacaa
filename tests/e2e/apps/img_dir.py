"""An image made of local files: a directory (with an ignore pattern) and a module."""

import importlib
import os
import sys
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
        # Modules under /root import, as add_local_python_source users expect
        # (img_helper itself also rides in the code bundle, so probe another).
        "root_importable": _imports_from_root(),
    }


def _imports_from_root() -> bool:
    Path("/root/img_root_probe.py").write_text("ANSWER = 42\n")
    importlib.invalidate_caches()
    module = importlib.import_module("img_root_probe")
    return module.ANSWER == 42 and module.__file__ == "/root/img_root_probe.py" and "/root" in sys.path
