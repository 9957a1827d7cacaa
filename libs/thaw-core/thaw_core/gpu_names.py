"""GPU requests as functions spell them, and which NVML model names serve them.

A request is a GPU type and an optional count (``"A10G"``, ``"H100:2"``,
``"any"``), or several in order of preference, stored comma-joined
(``"H100,A100-80GB"``). NVML names models in full ("NVIDIA H100 80GB HBM3",
"NVIDIA A100-SXM4-40GB", "Tesla T4"); a type matches a name holding its
model's token and, where the type names a memory size, that size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Request type -> (the model's token in NVML names, its memory token or None).
GPU_TYPES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "T4": (("T4",), None),
    "L4": (("L4",), None),
    "A10G": (("A10G",), None),
    # Modal's A10 is the A10G; a plain A10 serves it too.
    "A10": (("A10G", "A10"), None),
    "L40S": (("L40S",), None),
    "A100": (("A100",), None),
    "A100-40GB": (("A100",), "40GB"),
    "A100-80GB": (("A100",), "80GB"),
    "H100": (("H100",), None),
    "H200": (("H200",), None),
    "B200": (("B200",), None),
}
ANY = "any"
_ONE = re.compile(r"^\s*([A-Za-z0-9-]+)\s*(?::\s*(\d+))?\s*$")


@dataclass(frozen=True)
class GpuChoice:
    """One preference of a request: ``count`` GPUs of ``model``."""

    model: str
    count: int = 1

    def matches(self, nvml_name: str) -> bool:
        if self.model == ANY:
            return True
        tokens, memory = GPU_TYPES[self.model]
        names = set(re.split(r"[\s_-]+", nvml_name.upper()))
        return any(t in names for t in tokens) and (memory is None or memory in names)

    def __str__(self) -> str:
        return self.model if self.count == 1 else f"{self.model}:{self.count}"


def parse_one(text: str) -> GpuChoice:
    """``"h100:2"`` -> GpuChoice("H100", 2); ValueError naming what is valid."""
    m = _ONE.match(text)
    model = m.group(1).upper() if m else ""
    if model == ANY.upper():
        model = ANY
    if not m or (model != ANY and model not in GPU_TYPES):
        known = ", ".join([*GPU_TYPES, ANY])
        raise ValueError(f"invalid gpu {text!r}: use one of {known}, with an optional count (H100:2)")
    count = int(m.group(2)) if m.group(2) else 1
    if count < 1:
        raise ValueError(f"invalid gpu {text!r}: the count must be at least 1")
    return GpuChoice(model, count)


def parse_request(request: str | None) -> list[GpuChoice]:
    """A stored request's choices in order of preference; [] for no GPU."""
    if not request:
        return []
    return [parse_one(part) for part in request.split(",")]


def normalise(request: str | list[str] | tuple[str, ...]) -> str:
    """What a function stores for ``gpu=``: its choices, canonical, comma-joined."""
    parts = [request] if isinstance(request, str) else list(request)
    if not parts:
        raise ValueError("gpu=[] is empty; give a GPU type like 'A10G' or leave gpu out")
    return ",".join(str(parse_one(p)) for p in parts)
