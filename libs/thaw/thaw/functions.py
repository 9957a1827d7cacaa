"""``thaw.Function`` and ``thaw.FunctionCall``: calling user code remotely.

``Function`` and a class's bound methods (thaw.cls) share the call API of
:class:`Invocable`: ``.remote()``, ``.remote_gen()``, ``.spawn()``, ``.map()``,
``.starmap()``, ``.for_each()``, ``.spawn_map()``, each also as ``.aio``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from thaw_core.api import AutoscalerUpdate, CallAccepted, CallResult
from thaw_core.schema import FunctionSpec

from thaw._app_ref import AppBound, AppRef
from thaw._results import result_value
from thaw._serialization import serialize_args
from thaw._spec import checked_name
from thaw._sync import aio_function, aio_iterator, aio_method
from thaw._with_options import Variant, WithOptions
from thaw.client import LONG_POLL_S, CallTarget, current, new_request_key
from thaw.exception import AlreadyExistsError, InvalidError, NotFoundError, TimeoutError

if TYPE_CHECKING:
    from thaw_core.api import FunctionInfo

    from thaw._map import Inputs


class _Resend(NamedTuple):
    """What makes a call again under its request key: a gateway killed before
    it wrote the call down answers "never made" for it (``thaw._reconnect``)."""

    target: CallTarget
    payload: bytes
    request_key: bytes

    async def call(
        self, wait_s: float = LONG_POLL_S, *, resend: bool = False
    ) -> CallResult | CallAccepted:
        return await current().call(
            self.target, self.payload, wait_s, request_key=self.request_key, resend=resend
        )


async def _status(call_id: str, wait_s: float, resend: _Resend | None) -> CallResult | CallAccepted:
    """The call's answer; one this process made is made again (once, under its
    key, so never twice) if the gateway lost it."""
    try:
        return await current().call_status(call_id, wait_s)
    except NotFoundError:
        if resend is None:
            raise
    return await resend.call(wait_s, resend=True)


async def _run_call(
    target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> CallResult:
    resend = _Resend(target, serialize_args(args, kwargs), new_request_key())
    answer = await resend.call()
    while isinstance(answer, CallAccepted):
        answer = await _status(answer.call_id, LONG_POLL_S, resend)
    return answer


def _sized_total(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


class Invocable:
    """Something callable remotely. Subclasses say where inputs go (:meth:`_target`),
    whether it is a generator (None: unknown, as for ``from_name``) and how
    to run it here (:meth:`local`)."""

    def _target(self) -> CallTarget:
        raise NotImplementedError

    def _is_generator(self) -> bool | None:
        raise NotImplementedError

    def local(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @property
    def _label(self) -> str:
        return str(self._target())

    def _check_kind(self, generator: bool, use: str) -> None:
        if self._is_generator() is (not generator):
            raise InvalidError(
                f"{self._label} {'is not' if generator else 'is'} a generator function: use {use}"
            )

    @aio_method
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run it in a container and return what it returns (or raise what it raised)."""
        self._check_kind(False, ".remote_gen()")
        target = self._target()
        return result_value(await _run_call(target, args, kwargs), str(target))

    @aio_iterator
    async def remote_gen(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """A generator function's items (yielded once the call has finished)."""
        self._check_kind(True, ".remote()")
        target = self._target()
        for item in result_value(await _run_call(target, args, kwargs), str(target)) or ():
            yield item

    @aio_method
    async def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Start a call and return at once; ``.get()`` its result later."""
        target = self._target()
        resend = _Resend(target, serialize_args(args, kwargs), new_request_key())
        answer = await resend.call(wait_s=0)
        if isinstance(answer, CallResult):
            return FunctionCall(answer.call_id, label=str(target), result=answer)
        return FunctionCall(answer.call_id, label=str(target), resend=resend)

    def _map(
        self, inputs: Inputs, total: int | None, order_outputs: bool, return_exceptions: bool
    ) -> AsyncIterator[Any]:
        from thaw._map import map_calls  # asyncio, imported only by callers

        self._check_kind(False, "a loop over .remote_gen()")
        target = self._target()
        return map_calls(
            target,
            str(target),
            inputs,
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            total=total,
        )

    @aio_iterator
    def map(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[Any]:
        """One call per item (per tuple of items of several iterables), run in
        parallel; results in input order unless ``order_outputs=False``."""
        if not iterables:
            raise InvalidError(".map() needs at least one iterable of inputs")
        extra = kwargs or {}
        inputs = ((args, extra) for args in zip(*iterables))
        return self._map(inputs, _sized_total(iterables), order_outputs, return_exceptions)

    @aio_iterator
    def starmap(
        self,
        input_iterator: Iterable[Iterable[Any]],
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[Any]:
        """Like ``map``, each item being the tuple of positional arguments of one call."""
        extra = kwargs or {}
        inputs = ((tuple(args), extra) for args in input_iterator)
        return self._map(inputs, _sized_total((input_iterator,)), order_outputs, return_exceptions)

    @aio_method
    async def for_each(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        """Like ``map``, for the side effects: results are not kept."""
        extra = kwargs or {}
        inputs = ((args, extra) for args in zip(*iterables))
        async for _ in self._map(inputs, _sized_total(iterables), False, ignore_exceptions):
            pass

    @aio_method
    async def spawn_map(
        self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Submit one call per item and return without waiting for any."""
        from thaw._map import submit_calls

        extra = kwargs or {}
        await submit_calls(self._target(), ((args, extra) for args in zip(*iterables)))


class Function(WithOptions, Invocable, AppBound):
    """What ``@app.function`` returns. ``.spec`` describes it; ``.raw_f`` is the
    user's function, unchanged (the runtime calls it)."""

    def __init__(
        self,
        spec: FunctionSpec,
        raw_f: Callable[..., Any] | None,
        app: AppRef | None = None,
        *,
        app_name: str | None = None,
        serialized: bool = False,
        variant: Variant | None = None,
    ) -> None:
        AppBound.__init__(self, app, app_name)
        self.spec = spec
        self.raw_f = raw_f
        self.serialized = serialized
        # Set by with_options: calls go to the deployed function's variant it makes.
        self._variant = variant
        if raw_f is not None:
            functools.update_wrapper(self, raw_f)

    @classmethod
    def from_name(
        cls, app_name: str, name: str, *, environment_name: str | None = None
    ) -> Function:
        """A function of a deployed app, called by name (nothing is looked up until a call)."""
        spec = FunctionSpec(name=checked_name("function", name), module="", qualname=name)
        return cls(spec, None, app_name=checked_name("app", app_name))

    lookup = from_name

    def _target(self) -> CallTarget:
        if self._variant is None:
            return CallTarget(self.app_name, self.spec.name)
        return self._variant.target(self.app_name)

    def _with_variant(self, variant: Variant) -> Function:
        return Function(
            variant.spec,
            self.raw_f,
            self.app,
            app_name=self._app_name,
            serialized=self.serialized,
            variant=variant,
        )

    def _is_generator(self) -> bool | None:
        return None if self.raw_f is None else self.spec.is_generator

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function here, in this process."""
        if self.raw_f is None:
            raise InvalidError(f"{self._label} was looked up by name: it has no local code to run")
        return self.raw_f(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.local(*args, **kwargs)

    @aio_method
    async def hydrate(self) -> Function:
        """Fetch the deployed spec (a ``from_name`` function learns whether it is a generator)."""
        info: FunctionInfo = await current().function_info(self.app_name, self.spec.name)
        self.spec = info.spec
        return self

    @aio_method
    async def update_autoscaler(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
    ) -> None:
        """Change the deployed function's autoscaling settings now (those not
        given stay); the next deploy sets them from the code again."""
        body = AutoscalerUpdate(
            min_containers=min_containers,
            max_containers=max_containers,
            buffer_containers=buffer_containers,
            scaledown_window=scaledown_window,
        )
        await current().update_autoscaler(self.app_name, self.spec.name, body)

    @aio_method
    async def get_web_url(self) -> str | None:
        """The URL this web endpoint answers at (None if it is not one)."""
        info: FunctionInfo = await current().function_info(self.app_name, self.spec.name)
        return info.web_url or None

    def __reduce__(self) -> tuple[Any, ...]:
        # Passed as an argument, a function travels as its name, not its app and
        # code; a with_options handle as its base's name and its overrides.
        if self._variant is not None:
            v = self._variant
            return (_function_by_name, (self.app_name, v.base.name, v.overrides.encode()))
        return (_function_by_name, (self.app_name, self.spec.name))

    def __repr__(self) -> str:
        return f"<thaw.Function {self._label}>"


def _function_by_name(app_name: str, name: str, options: bytes = b"") -> Function:
    # Module-level: pickle refers to it by name (a classmethod would be pickled by value).
    function = Function.from_name(app_name, name)
    if not options:
        return function
    variant = Variant.decoded(function.spec, options)
    return Function(variant.spec, None, app_name=app_name, variant=variant)


class FunctionCall:
    """A call started with ``.spawn()``: ``.get()`` its result, ``.cancel()`` it,
    or keep ``.object_id`` and rebuild it elsewhere with ``FunctionCall.from_id``."""

    def __init__(
        self,
        call_id: str,
        *,
        label: str = "",
        result: CallResult | None = None,
        resend: _Resend | None = None,
    ) -> None:
        self.object_id = call_id
        self._label = label or f"call {call_id}"
        self._result = result
        self._resend = resend

    @classmethod
    def from_id(cls, function_call_id: str) -> FunctionCall:
        return cls(function_call_id)

    @aio_method
    async def get(self, timeout: float | None = None) -> Any:
        """Wait for the result (at most ``timeout`` seconds; 0 only looks)."""
        if self._result is None:
            self._result = await self._wait(timeout)
        return result_value(self._result, self._label)

    async def _wait(self, timeout: float | None) -> CallResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = (
                LONG_POLL_S if deadline is None else min(LONG_POLL_S, deadline - time.monotonic())
            )
            answer = await _status(self.object_id, left, self._resend)
            if isinstance(answer, CallResult):
                return answer
            if deadline is not None and time.monotonic() >= deadline:
                waiting = f"; it waits for {answer.waiting_for}" if answer.waiting_for else ""
                # (UNSET, falsy, when the gateway knows of nothing wrong)
                raise TimeoutError(
                    f"{self._label} has not finished after {timeout:g}s ({answer.status}{waiting})"
                )

    @aio_method
    async def cancel(self, terminate_containers: bool = False) -> None:
        """Stop the call if it has not finished; a finished call keeps its result."""
        with contextlib.suppress(AlreadyExistsError):  # the gateway's 409: it finished first
            await current().cancel(self.object_id, terminate=terminate_containers)

    @staticmethod
    @aio_function
    async def gather(*calls: FunctionCall) -> list[Any]:
        """The results of several calls, in their order; the first failure raises."""
        import asyncio

        return list(await asyncio.gather(*(call.get.aio() for call in calls)))

    def __repr__(self) -> str:
        return f"<thaw.FunctionCall {self.object_id}>"


def function_kind(raw_f: Callable[..., Any]) -> dict[str, bool]:
    return {
        "is_async": inspect.iscoroutinefunction(raw_f) or inspect.isasyncgenfunction(raw_f),
        "is_generator": inspect.isgeneratorfunction(raw_f) or inspect.isasyncgenfunction(raw_f),
    }
