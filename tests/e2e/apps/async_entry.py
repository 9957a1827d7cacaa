"""An ``async def`` local entrypoint that awaits ``.remote.aio``."""

import thaw as modal

app = modal.App("async-entry")


@app.function()
def double(x: int) -> int:
    return 2 * x


@app.local_entrypoint()
async def main(x: int = 21) -> None:
    print("async result:", await double.remote.aio(x))
