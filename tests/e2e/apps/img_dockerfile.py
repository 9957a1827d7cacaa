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
vol = modal.Volume.from_name("img-dockerfile-vol", create_if_missing=True)


@app.function(volumes={"/data": vol})
def inspect() -> dict[str, str]:
    home = Path("/home/appuser")
    # The USER can write its volume, over what an earlier container committed too.
    note = Path("/data/sub/note.txt")
    note.parent.mkdir(exist_ok=True)
    note.write_text(f"written by {os.getuid()}")
    vol.commit()
    return {
        "APP_MODE": os.environ.get("APP_MODE", ""),
        "cwd": os.getcwd(),
        "built": Path("built.txt").read_text(),
        "data": Path("/app/data.txt").read_text(),
        "uid_at_build": (home / "uid").read_text().strip(),
        "marker": (home / "marker").read_text().strip(),
        "uid": str(os.getuid()),
        "HOME": os.environ.get("HOME", ""),
        "groups": ",".join(str(g) for g in sorted(set(os.getgroups()) - {os.getgid()})),
        "note_owner": str(note.stat().st_uid),
    }
