"""An app that `thaw app show` and `thaw app history` describe
(tests/e2e/test_app_show.py): resources and a schedule on one function, a
memory snapshot on the other."""

import thaw as modal

app = modal.App("shown")


@app.function(cpu=0.5, memory=256, timeout=60, schedule=modal.Period(hours=1))
def tick() -> str:
    return "tick"


@app.function(enable_memory_snapshot=True)
def snapped(x: int) -> int:
    print(f"snapped says {x}")
    return x + 1
