"""What ``@thaw.batched`` records in the spec, and what it refuses."""

from __future__ import annotations

import pytest
import thaw as modal
from thaw.exception import InvalidError
from thaw_core.schema import BatchSpec


def test_batched_records_the_batch_and_holds_a_whole_batch() -> None:
    app = modal.App("batched")

    @app.function()
    @modal.batched(max_batch_size=8, wait_ms=100)
    def f(xs: list[int], ys: list[int]) -> list[int]:
        return [x + y for x, y in zip(xs, ys, strict=True)]

    assert f.spec.batch == BatchSpec(max_batch_size=8, wait_ms=100)
    assert f.spec.max_inputs == 8


@pytest.mark.parametrize(
    ("size", "wait"), [(0, 10), (1001, 10), (8, -1), (8, 10 * 60 * 1000 + 1), (True, 1)]
)
def test_bounds_are_checked(size: int, wait: int) -> None:
    with pytest.raises(InvalidError, match="max_batch_size|wait_ms"):
        modal.batched(max_batch_size=size, wait_ms=wait)


def test_unbatchable_functions_are_refused() -> None:
    mark = modal.batched(max_batch_size=2, wait_ms=0)
    with pytest.raises(InvalidError, match=r"\*args"):
        mark(lambda *xs: xs)
    with pytest.raises(InvalidError, match="generator"):

        def gen(xs: list[int]):  # type: ignore[no-untyped-def]
            yield xs

        mark(gen)


def test_batched_with_concurrent_is_refused() -> None:
    app = modal.App("batched-concurrent")
    with pytest.raises(InvalidError, match="cannot be combined"):

        @app.function()
        @modal.concurrent(max_inputs=4)
        @modal.batched(max_batch_size=2, wait_ms=0)
        def f(xs: list[int]) -> list[int]:
            return xs


def test_a_batched_method_sizes_its_class() -> None:
    app = modal.App("batched-cls")

    @app.cls()
    class C:
        @modal.method()
        @modal.batched(max_batch_size=4, wait_ms=10)
        def m(self, xs: list[int]) -> list[int]:
            return xs

    assert C.spec.batch == BatchSpec(max_batch_size=4, wait_ms=10)
    assert C.spec.max_inputs == 4


def test_two_batched_methods_are_refused_naming_them() -> None:
    app = modal.App("batched-cls-two")
    with pytest.raises(InvalidError, match="m, n"):

        @app.cls()
        class C:
            @modal.method()
            @modal.batched(max_batch_size=2, wait_ms=0)
            def m(self, xs: list[int]) -> list[int]:
                return xs

            @modal.method()
            @modal.batched(max_batch_size=2, wait_ms=0)
            def n(self, xs: list[int]) -> list[int]:
                return xs
