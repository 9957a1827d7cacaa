"""The platform guide's and the memory-snapshot seed's examples, as users
write them with ``import thaw as modal``: they import, decorate and describe
themselves without a gateway (and without torch or fastapi installed)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import msgspec
import pytest
from thaw import _cls

CORE_PATTERN = """
import modal

app = modal.App("my-app")
image = modal.Image.debian_slim().pip_install("torch", "numpy")
volume = modal.Volume.from_name("my-data", create_if_missing=True)

@app.function(
    image=image,
    gpu="A10G",
    volumes={"/data": volume},
    timeout=600,
)
def gpu_task(seed: int) -> dict:
    import torch
    assert torch.cuda.is_available()
    return {"seed": seed, "status": "done"}

@app.local_entrypoint()
def main():
    tasks = [(i,) for i in range(100)]
    results = list(gpu_task.starmap(tasks))

@app.cls(gpu="A10G", image=image)
class Inference:
    @modal.enter()
    def load_model(self):
        import torch
        self.model = torch.load("/data/model.pt")
        self.model.eval()

    @modal.method()
    def predict(self, x: list[float]) -> list[float]:
        return self.model(x).tolist()

    @modal.exit()
    def cleanup(self):
        del self.model

@app.function(gpu="A10G", image=image)
@modal.web_endpoint(method="POST")
def predict(request: dict) -> dict:
    return {"prediction": request}

@app.function(schedule=modal.Period(hours=1))
def hourly_sync():
    pass

@app.function(schedule=modal.Cron("0 9 * * *"))
def daily_report():
    pass

@app.function(secrets=[modal.Secret.from_name("my-api-key")])
def call_api():
    import os
    return os.environ["API_KEY"]

@app.cls(gpu="T4", memory=32768, min_containers=9)
class Trainer:
    @modal.enter()
    def load_data(self):
        self.train_data = []

    @modal.method()
    def train(self, config: dict) -> dict:
        return config

@app.function(gpu="A10G")
@modal.concurrent(max_inputs=2)
def process(seed: int) -> dict:
    return {"seed": seed}
"""

IMAGES = """
import modal

image = modal.Image.debian_slim().pip_install("torch", "numpy")
image = (modal.Image.debian_slim()
    .apt_install("git", "ffmpeg")
    .pip_install("torch", "transformers"))
image = modal.Image.debian_slim().pip_install_from_requirements("requirements.txt")
image = (modal.Image.debian_slim()
    .run_commands("git clone https://github.com/...", "cd repo && pip install -e ."))
image = modal.Image.from_dockerfile("./Dockerfile")
image = modal.Image.debian_slim().add_local_dir("./src", "/app/src")
"""

SNAPSHOTS = """
import modal
image = modal.Image.debian_slim().pip_install("sentence-transformers")
app = modal.App("sentence-transformers", image=image)
with image.imports():
    from sentence_transformers import SentenceTransformer

model_vol = modal.Volume.from_name("sentence-transformers-models", create_if_missing=True)

@app.cls(gpu="a10g", volumes={"/models": model_vol}, enable_memory_snapshot=True)
class Embedder:
    model_id = "BAAI/bge-small-en-v1.5"

    @modal.enter(snap=True)
    def load(self):
        self.model = SentenceTransformer(f"/models/{self.model_id}", device="cpu")

    @modal.enter(snap=False)
    def setup(self):
        self.model.to("cuda")

    @modal.method()
    def run(self, sentences:list[str]):
        embeddings = self.model.encode(sentences, normalize_embeddings=True)
        print(embeddings)

@app.local_entrypoint()
def main():
    Embedder().run.remote(sentences=["what is the meaning of life?"])

@app.function(
    gpu="a10",
    enable_memory_snapshot=True,
    experimental_options={"enable_gpu_snapshot": True},
)
def my_gpu_func():
    import torch
    print(f"GPUs available: {torch.cuda.is_available()}")
"""


def load(tmp_path: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    import thaw

    monkeypatch.setitem(sys.modules, "modal", thaw)  # what `import thaw as modal` gives a user
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_guide_core_pattern_describes_every_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = load(tmp_path, "guide_core", CORE_PATTERN, monkeypatch)
    specs = {s.name: s for s in m.app.specs()}
    assert set(specs) == {
        "gpu_task",
        "Inference",
        "predict",
        "hourly_sync",
        "daily_report",
        "call_api",
        "Trainer",
        "process",
    }
    assert specs["gpu_task"].resources.gpu == "A10G"
    assert {m.path: m.name for m in specs["gpu_task"].volumes} == {"/data": "my-data"}
    assert specs["Inference"].methods == ["predict"]
    assert specs["predict"].experimental_options["web"]["method"] == "POST"
    assert msgspec.to_builtins(specs["hourly_sync"].schedule) == {
        "kind": "period",
        "seconds": 3600.0,
    }
    assert msgspec.to_builtins(specs["daily_report"].schedule) == {
        "kind": "cron",
        "cron": "0 9 * * *",
        "timezone": "UTC",
    }
    assert [s.name for s in specs["call_api"].secrets] == ["my-api-key"]
    assert (specs["Trainer"].resources.memory_mb, specs["Trainer"].autoscale.min_containers) == (
        32768,
        9,
    )
    assert specs["process"].max_inputs == 2
    assert list(m.app.registered_entrypoints) == ["main"]
    hooks = _cls.hooks(m.Inference.user_cls)
    assert [h.__name__ for h in hooks.enter_nosnap] == ["load_model"]
    assert [h.__name__ for h in hooks.exit] == ["cleanup"]


def test_guide_image_recipes_record_their_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = load(tmp_path, "guide_images", IMAGES, monkeypatch)
    assert m.image.spec()["steps"][-1]["op"] == "add_local_dir"


def test_memory_snapshot_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = load(tmp_path, "guide_snapshots", SNAPSHOTS, monkeypatch)
    embedder = m.Embedder.spec
    assert embedder.enable_memory_snapshot and embedder.resources.gpu == "A10G"
    assert msgspec.to_builtins(embedder.image) == {
        "steps": [
            {"op": "debian_slim", "client_python": f"{sys.version_info[0]}.{sys.version_info[1]}"},
            {"op": "pip_install", "packages": ["sentence-transformers"]},
        ]
    }
    hooks = _cls.hooks(m.Embedder.user_cls)
    assert [h.__name__ for h in hooks.enter_snap] == ["load"]
    assert [h.__name__ for h in hooks.enter_nosnap] == ["setup"]
    gpu_func = m.my_gpu_func.spec
    assert gpu_func.experimental_options == {"enable_gpu_snapshot": True}
    assert gpu_func.resources.gpu == "A10"
