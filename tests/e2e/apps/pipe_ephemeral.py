"""An app that `thaw run` keeps deployed (ephemeral) until a file appears:
the guide's clean-up pipeline is what stops it."""

import os
import time

import thaw as modal

app = modal.App("probe-long-running-ephemeral-app-whose-name-a-table-cuts")


@app.function()
def noop() -> None:
    pass


@app.local_entrypoint()
def main() -> None:
    release = os.environ["PIPE_RELEASE_FILE"]
    while not os.path.exists(release):
        time.sleep(0.1)
