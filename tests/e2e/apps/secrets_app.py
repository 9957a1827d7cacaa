"""Functions that report their secrets (tests/e2e/test_secrets.py): a named
one with a required key, one made from this machine's environment at deploy,
and a snapshotted class that shows what a restored container sees."""

import os
import time

import thaw as modal

app = modal.App("secrets-e2e")

named = modal.Secret.from_name("e2e-creds", required_keys=["API_KEY"])


@app.function(
    secrets=[
        named,
        modal.Secret.from_local_environ(["E2E_LOCAL"]),
        modal.Secret.from_dict({"ORDER": "last-wins"}),
    ]
)
def env_of(keys: list) -> dict:
    return {k: os.environ.get(k) for k in keys}


@app.cls(enable_memory_snapshot=True, secrets=[named])
class Snapped:
    @modal.enter(snap=True)
    def load(self):
        self.at_snapshot = os.environ.get("API_KEY")
        # An expensive start, as a snapshot exists to skip: without it a
        # restore is barely faster than this app's cold start, and the catalog
        # rightly stops using a snapshot whose restores are no faster.
        time.sleep(2.0)

    @modal.method()
    def key(self) -> dict:
        return {
            "key": os.environ.get("API_KEY"),
            "at_snapshot": self.at_snapshot,
            "container": os.environ["THAW_CONTAINER_ID"],
        }
