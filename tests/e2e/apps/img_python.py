"""An app on ``debian_slim(python_version=IMG_PYTHON)`` with a pure package
(six) and a compiled one (markupsafe's C speedups): the function says which
Python runs it and where both come from."""

import importlib.util
import os
import sys

import thaw as modal

VERSION = os.environ.get("IMG_PYTHON", "3.13")
NAME = os.environ.get("IMG_APP", "img-python-" + VERSION.replace(".", ""))

image = modal.Image.debian_slim(python_version=VERSION or None).pip_install("six", "markupsafe")
app = modal.App(NAME, image=image)


@app.function()
def inspect() -> dict[str, str]:
    import markupsafe._speedups
    import six

    return {
        "version": sys.version,
        "executable": sys.executable,
        "six": six.__file__,
        "speedups": markupsafe._speedups.__file__,
        "escaped": str(markupsafe.escape("<b>")),
        # In the host's venv, not in this image: a container must not see them.
        "host_only": ",".join(
            n for n in ("flask", "pytest", "requests") if importlib.util.find_spec(n) is not None
        ),
    }


@app.function()
@modal.fastapi_endpoint()
def hello() -> dict[str, str]:
    # Served by the runtime's fastapi (its layer): the image installs none.
    return {"version": sys.version}
