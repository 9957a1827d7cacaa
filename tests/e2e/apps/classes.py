"""The platform guide's "Classes (Stateful Services)" example.

The model is a stand-in for ``torch.load("/data/model.pt")`` (no torch in the
default image, no volume content yet): what matters is that ``enter`` runs
once per container and methods see what it built.
"""

import os

import thaw as modal

app = modal.App("classes")
image = modal.Image.debian_slim()


@app.cls(gpu=None, image=image)
class Inference:
    @modal.enter()  # Runs once on container start
    def load_model(self):
        self.loads = getattr(self, "loads", 0) + 1
        self.model = lambda xs: [2 * x for x in xs]

    @modal.method()
    def predict(self, x: list[float]) -> list[float]:
        return self.model(x)

    @modal.method()
    def stats(self) -> dict:
        return {"loads": self.loads, "pid": os.getpid()}

    @modal.exit()  # Cleanup on container shutdown
    def cleanup(self):
        del self.model
