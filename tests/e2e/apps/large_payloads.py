"""Functions that take and return large values (tests/e2e/test_large_payloads.py)."""

import hashlib

import thaw as modal

app = modal.App("large-payloads")


@app.function()
def echo(data: bytes) -> bytes:
    return data


@app.function()
def digest(data: bytes) -> str:
    """What a large argument arrived as, without sending it back."""
    return hashlib.sha256(data).hexdigest()


@app.function()
def make(size: int, seed: int) -> bytes:
    """``size`` bytes the caller can make too (``pattern``), as a large result."""
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


@app.function()
def text(size: int) -> str:
    """A large JSON result (for callers of the json codec)."""
    return "x" * size
