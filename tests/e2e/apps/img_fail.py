"""An image whose command fails: the deploy must fail and say where."""

import thaw as modal

app = modal.App(
    "img-fail", image=modal.Image.debian_slim().run_commands("echo about to fail", "exit 3")
)


@app.function()
def never() -> None: ...
