"""An app on a registry image: ``IMG_REGISTRY_TAG`` names it,
``IMG_REGISTRY_SECRET`` (optional) the secret with its registry credentials,
``IMG_APP`` the app's name."""

import os
from pathlib import Path

import thaw as modal

SECRET = os.environ.get("IMG_REGISTRY_SECRET")
image = modal.Image.from_registry(
    os.environ.get("IMG_REGISTRY_TAG", "set-at-deploy"),
    secret=modal.Secret.from_name(SECRET) if SECRET else None,
).pip_install("six")
app = modal.App(os.environ.get("IMG_APP", "img-registry"), image=image)


@app.function()
def inspect() -> dict[str, str]:
    import six

    return {
        "six": six.__file__,
        "marker": Path("/etc/thaw-test-marker").read_text(),
        "issue_removed": str(not Path("/etc/issue").exists()),
        "FROM_REG": os.environ.get("FROM_REG", ""),
        "cwd": os.getcwd(),
    }
