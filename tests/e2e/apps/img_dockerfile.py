"""An app on a Dockerfile image: ``IMG_DOCKERFILE`` is its path,
``IMG_BASE`` the registry image its stages start from, ``IMG_APP`` the app."""

import os
from pathlib import Path

import thaw as modal

image = modal.Image.from_dockerfile(
    os.environ.get("IMG_DOCKERFILE", "Dockerfile"),
    build_args={"BASE": os.environ.get("IMG_BASE", "set-at-deploy"), "GREETING": "hi"},
)
app = modal.App(os.environ.get("IMG_APP", "img-dockerfile"), image=image)


@app.function()
def inspect() -> dict[str, str]:
    home = Path("/home/appuser")
    return {
        "APP_MODE": os.environ.get("APP_MODE", ""),
        "cwd": os.getcwd(),
        "built": Path("built.txt").read_text(),
        "data": Path("/app/data.txt").read_text(),
        "uid_at_build": (home / "uid").read_text().strip(),
        "marker": (home / "marker").read_text().strip(),
        "uid": str(os.getuid()),
    }
