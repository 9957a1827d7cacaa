"""What a container runs: the user's function, or a class's methods on
instances built once per distinct constructor parameters."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any, Protocol

from thaw_core.container_protocol import RunInput
from thaw_core.schema import FunctionSpec

from thaw import _cls
from thaw._resolve import resolve
from thaw.cls import Cls
from thaw.functions import Function
from thaw.runtime.batching import batched_callee, batched_method, marked_batch
from thaw.runtime.codec import decode_params
from thaw.runtime.executor import Callee, Executor, callee
from thaw.runtime.log import log


class Target(Protocol):
    # Whether any callable is sync, so that reader threads may run inputs.
    runs_in_threads: bool

    async def enter(self, *, snap: bool) -> None:
        """Run the startup work of one phase: ``snap=True`` is captured by a
        memory snapshot, ``snap=False`` runs again after every restore."""

    def bind_now(self, run: RunInput) -> tuple[Callee, object | None] | None:
        """``bind`` when it needs nothing built (from any thread); None otherwise."""

    async def bind(self, run: RunInput) -> tuple[Callee, object | None]:
        """What ``run`` calls, and the instance it is called on (None for a function)."""

    async def exit(self) -> None:
        """Run the exit hooks of everything ``enter``/``bind`` set up."""


class FunctionTarget:
    def __init__(self, function: Callee) -> None:
        self._function = function
        self.runs_in_threads = not function.on_loop

    async def enter(self, *, snap: bool) -> None:
        pass

    def bind_now(self, run: RunInput) -> tuple[Callee, object | None] | None:
        return (self._function, None) if run.method is None else None

    async def bind(self, run: RunInput) -> tuple[Callee, object | None]:
        if run.method is not None:
            raise AttributeError(
                f"{self._function.name} is a function, not a class: it has no method {run.method!r}"
            )
        return self._function, None

    async def exit(self) -> None:
        pass


class ClassTarget:
    """Instances are cached by the input's encoded parameters, so that enter
    hooks run once per distinct parameters, however many inputs share them."""

    def __init__(self, user_cls: type, name: str, executor: Executor) -> None:
        self._cls = user_cls
        self._name = name
        self._executor = executor
        self._hooks = _cls.hooks(user_cls)
        self._methods = {
            m: batched_method(callee(fn, f"{name}.{m}"), marked_batch(fn))
            for m, fn in self._hooks.methods.items()
        }
        self.runs_in_threads = any(not m.on_loop for m in self._methods.values())
        # A class whose parameters all have defaults gets its default instance
        # at start, so its enter hooks run before the container says Ready.
        self._has_default = not any(p.required for p in _cls.parameters(user_cls).values())
        self._default: object | None = None
        self._ready: dict[tuple[str, bytes], object] = {}
        self._building: dict[tuple[str, bytes], asyncio.Task[object]] = {}
        self._entered: list[object] = []  # in the order their enter hooks finished

    def check_methods(self, expected: list[str]) -> None:
        missing = [m for m in expected if m not in self._methods]
        if missing:
            raise AttributeError(
                f"{self._name} has no @thaw.method() named {', '.join(map(repr, missing))}; "
                f"it has: {', '.join(self._methods) or 'none'}"
            )

    async def enter(self, *, snap: bool) -> None:
        if not self._has_default:
            return
        if snap:
            self._default = await self._executor.call(_cls.instantiate, self._cls, {})
            await self._run_hooks(self._hooks.enter_snap, self._default)
        else:
            assert self._default is not None
            await self._run_hooks(self._hooks.enter_nosnap, self._default)
            self._entered.append(self._default)

    def bind_now(self, run: RunInput) -> tuple[Callee, object | None] | None:
        method = self._methods.get(run.method) if run.method is not None else None
        if method is None:
            return None
        if not run.params and self._default is not None:
            return method, self._default
        instance = self._ready.get((run.codec, run.params))  # atomic: dict.get
        return None if instance is None else (method, instance)

    async def bind(self, run: RunInput) -> tuple[Callee, object | None]:
        if (bound := self.bind_now(run)) is not None:
            return bound
        method = self._methods.get(run.method) if run.method is not None else None
        if method is None:
            wanted = (
                f"no @thaw.method() named {run.method!r}"
                if run.method
                else "a call must name a method"
            )
            raise AttributeError(
                f"{self._name}: {wanted}; its methods: {', '.join(self._methods) or 'none'}"
            )
        return method, await self._instance((run.codec, run.params))

    async def _instance(self, key: tuple[str, bytes]) -> object:
        build = self._building.get(key)
        if build is None:
            build = self._building[key] = asyncio.create_task(self._build(key))
            build.add_done_callback(lambda task: self._built(key, task))
        # One input's cancellation must not cancel a build other inputs wait for.
        return await asyncio.shield(build)

    def _built(self, key: tuple[str, bytes], task: asyncio.Task[object]) -> None:
        self._building.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have been cancelled

    async def _build(self, key: tuple[str, bytes]) -> object:
        codec, encoded = key
        params = decode_params(codec, encoded)  # type: ignore[arg-type]
        if not params and self._default is not None:
            instance = self._default
        else:
            # Built after the snapshot, so both phases run back to back.
            instance = await self._executor.call(_cls.instantiate, self._cls, params)
            await self._run_hooks(self._hooks.enter_snap, instance)
            await self._run_hooks(self._hooks.enter_nosnap, instance)
            self._entered.append(instance)
        # Failed builds are not cached: the next input with these parameters tries again.
        self._ready[key] = instance
        return instance

    async def _run_hooks(self, hooks: list[Callable[[Any], Any]], instance: object) -> None:
        for hook in hooks:
            await self._executor.call(hook, instance)

    async def exit(self) -> None:
        for instance in self._entered:
            for hook in self._hooks.exit:
                try:
                    await self._executor.call(hook, instance)
                except asyncio.CancelledError:
                    raise
                except BaseException:  # noqa: BLE001
                    # One failing hook must not keep the others from cleaning up.
                    log.exception("exit hook %s failed", getattr(hook, "__qualname__", hook))


def load_target(spec: FunctionSpec, executor: Executor) -> Target:
    """Import the spec's module from the bundle and find what it names.
    Runs on the main thread: module code may install signal handlers."""
    module = importlib.import_module(spec.module)
    found = resolve(module, spec.qualname)
    name = f"{spec.module}.{spec.qualname}"
    match spec.kind, found:
        case "class", Cls(user_cls=type() as user_cls):
            target = ClassTarget(user_cls, name, executor)
            target.check_methods(spec.methods)
            return target
        case "function", Function(raw_f=raw_f) if callable(raw_f):
            return FunctionTarget(batched_callee(callee(raw_f, name), spec.batch))
    found_kind = "class" if isinstance(found, Cls) else "function"
    raise TypeError(f"{name} is a {found_kind}, but the spec deploys it as a {spec.kind}")
