"""The one table from GPU requests to NVML model names."""

from __future__ import annotations

import pytest
from thaw_core.gpu_names import GpuChoice, normalise, parse_one, parse_request

NVML = {
    "T4": "Tesla T4",
    "L4": "NVIDIA L4",
    "A10G": "NVIDIA A10G",
    "L40S": "NVIDIA L40S",
    "A100-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-80GB": "NVIDIA A100 80GB PCIe",
    "H100": "NVIDIA H100 80GB HBM3",
    "H200": "NVIDIA H200",
    "B200": "NVIDIA B200",
}


@pytest.mark.parametrize(
    ("request_type", "served_by"),
    [
        ("T4", {"T4"}),
        ("L4", {"L4"}),
        ("A10G", {"A10G"}),
        ("A10", {"A10G"}),
        ("L40S", {"L40S"}),
        ("A100", {"A100-40GB", "A100-80GB"}),
        ("A100-40GB", {"A100-40GB"}),
        ("A100-80GB", {"A100-80GB"}),
        ("H100", {"H100"}),
        ("H200", {"H200"}),
        ("B200", {"B200"}),
        ("any", set(NVML)),
    ],
)
def test_each_type_matches_exactly_its_models(request_type: str, served_by: set[str]) -> None:
    choice = parse_one(request_type)
    assert {k for k, name in NVML.items() if choice.matches(name)} == served_by


def test_requests_parse_with_counts_and_preferences() -> None:
    assert parse_one("h100:2") == GpuChoice("H100", 2)
    assert parse_request("H100,A100-80GB:2") == [GpuChoice("H100"), GpuChoice("A100-80GB", 2)]
    assert parse_request(None) == []
    assert normalise(["any", "t4:1"]) == "any,T4"
    for bad in ("H100:0", "V100", "", "H100:x"):
        with pytest.raises(ValueError, match="gpu|GPU"):
            parse_one(bad)
    with pytest.raises(ValueError, match="empty"):
        normalise([])
