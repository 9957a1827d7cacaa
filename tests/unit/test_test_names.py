"""pytest imports test modules by basename (tests/ has no packages): two test
files of one name in different folders stop the whole run at collection with
"import file mismatch", so every name is used once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_name_is_used_once() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1]
