"""What a caller learns about an exception raised in a container: its text,
its traceback from the user's first frame, and the exception itself when it
can be rebuilt."""

from __future__ import annotations

import asyncio
import pickle
import threading

from thaw.runtime.executor import Executor, callee
from thaw.runtime.failure import describe
from thaw_core.container_protocol import Output, RunInput


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001 - any exception, raised for its traceback
        return e


def test_error_text_traceback_and_pickled_exception() -> None:
    def parse(text: str) -> int:
        return int(text)

    try:
        parse("twelve")
    except ValueError as e:
        failure = describe(e)
    assert failure.error == "ValueError: invalid literal for int() with base 10: 'twelve'"
    assert failure.traceback.startswith("Traceback (most recent call last):")
    assert "in parse" in failure.traceback and "return int(text)" in failure.traceback
    assert failure.traceback.rstrip().endswith(failure.error)
    rebuilt = pickle.loads(failure.exc)
    assert type(rebuilt) is ValueError and rebuilt.args == failure_args("twelve")


def failure_args(text: str) -> tuple[str]:
    return (f"invalid literal for int() with base 10: {text!r}",)


def test_the_traceback_starts_at_the_users_first_frame() -> None:
    def load() -> None:
        raise OSError("weights not found")

    def model() -> None:
        load()

    async def amodel() -> None:
        await asyncio.sleep(0)
        load()

    async def run(fn: object) -> Output:
        # As in the container: the executor's frames, asyncio's and the thread
        # pool's come before the user's; the caller sees none of them.
        results: list[Output] = []
        await Executor(1, asyncio.get_running_loop()).run(
            RunInput(input_id="in-1"), callee(fn, "m.f"), None, results.append
        )  # type: ignore[arg-type]
        return results[0]

    for fn in (model, amodel):
        result = asyncio.run(run(fn))
        lines = result.traceback.splitlines()
        assert lines[1].endswith(f"in {fn.__name__}"), result.traceback
        assert "in load" in result.traceback and lines[-1] == "OSError: weights not found"
        for plumbing in ("executor.py", "asyncio", "concurrent"):
            assert plumbing not in result.traceback


def test_exception_that_cannot_be_rebuilt() -> None:
    class NeedsTwo(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}/{b}")

    failure = describe(_raise(NeedsTwo(1, 2)))
    assert failure.exc == b""  # pickles, but unpickling would fail in the caller
    assert failure.error == "NeedsTwo: 1/2"


def test_exception_that_does_not_pickle() -> None:
    class Holder(Exception):
        pass

    exc = Holder("x")
    exc.lock = threading.Lock()  # type: ignore[attr-defined]
    failure = describe(_raise(exc))
    assert failure.exc == b"" and failure.error == "Holder: x"


def test_odd_messages() -> None:
    assert describe(_raise(KeyboardInterrupt())).error == "KeyboardInterrupt"

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe(_raise(Unprintable())).error == "Unprintable: <exception str() failed>"


def test_chained_exceptions_keep_their_cause() -> None:
    try:
        try:
            {}["key"]
        except KeyError as e:
            raise LookupError("config incomplete") from e
    except LookupError as e:
        failure = describe(e)
    assert "KeyError: 'key'" in failure.traceback
    assert "The above exception was the direct cause" in failure.traceback
    assert failure.error == "LookupError: config incomplete"
