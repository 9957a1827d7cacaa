"""Functions whose behaviour the end-to-end tests check: results, errors,
timeouts, retries, scaling."""

import time

import thaw as modal

app = modal.App("behaviours")


@app.function()
def square(x: int) -> int:
    return x * x


class QuotaExceeded(Exception):
    pass


@app.function()
def boom(n: int) -> None:
    raise PermissionError(f"quota exceeded after {n} requests")


@app.function()
def custom_boom() -> None:
    # A class the caller cannot import: it arrives as a RemoteError.
    raise QuotaExceeded("over quota")


@app.function(timeout=2)
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.1, backoff_coefficient=1.0))
def always_fails() -> None:
    raise RuntimeError("still broken")


@app.function(scaledown_window=2)
def briefly(x: int) -> int:
    return x + 1


@app.function()
async def async_double(x: int) -> int:
    return 2 * x


@app.function(retries=modal.Retries(max_retries=1, initial_delay=0.1, backoff_coefficient=1.0))
def hard_exit(code: int) -> None:
    import os

    os._exit(code)  # the container dies under the input
