"""A batched function that returns, with each result, the size of the batch
it was called in; a batch holding "boom" fails as a whole."""

import thaw as modal

app = modal.App("batched-app")


@app.function(max_containers=1)
@modal.batched(max_batch_size=8, wait_ms=100)
def double(xs: list) -> list:
    if "boom" in xs:
        raise ValueError(f"batch of {len(xs)} failed")
    return [(x * 2, len(xs)) for x in xs]


@app.cls(max_containers=1)
class Scaler:
    @modal.method()
    @modal.batched(max_batch_size=8, wait_ms=100)
    def triple(self, xs: list) -> list:
        return [(x * 3, len(xs)) for x in xs]
