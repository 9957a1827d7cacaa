"""Deploys only when secret ``E2E_MISSING`` names exists with key ``NEEDED``
(tests/e2e/test_secrets.py)."""

import os

import thaw as modal

app = modal.App("secrets-missing")


@app.function(
    secrets=[modal.Secret.from_name(os.environ["E2E_MISSING"], required_keys=["NEEDED"])]
)
def f() -> int:
    return 1
