"""Snapshot bench (b): import torch and build a ~100 MB model (25M float32
parameters) in ``enter(snap=True)``; one inference per call."""

import thaw as modal

app = modal.App("snap-torch")


@app.cls(enable_memory_snapshot=True)
class Model:
    @modal.enter(snap=True)
    def load(self):
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.model = torch.nn.Sequential(
            *(torch.nn.Linear(2500, 2500) for _ in range(4)),
        ).eval()
        self.params = sum(p.numel() for p in self.model.parameters())

    @modal.method()
    def run(self, x):
        with self.torch.no_grad():
            out = self.model(self.torch.full((1, 2500), float(x)))
        return [self.params, float(out.sum())]
