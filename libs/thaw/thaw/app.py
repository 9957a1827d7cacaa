"""``thaw.App``: a named group of functions and classes, deployed together.

In a container, decorating only registers (the runtime finds the objects
through thaw._resolve); ``app.run()`` and ``app.deploy()`` are for the
caller's side (thaw.deploy).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from thaw_core.api import DeployResponse
from thaw_core.schema import FunctionSpec

from thaw._spec import apply_options, checked_name, marker_options, merge_app_defaults, module_name
from thaw._sync import aio_function
from thaw.client import current
from thaw.cls import Cls, class_spec_fields
from thaw.deploy import AppRun, deploy_app
from thaw.exception import InvalidError, NotFoundError
from thaw.functions import Function, function_kind
from thaw.image import Image
from thaw.retries import Retries
from thaw.schedule import Schedule
from thaw.secret import Secret
from thaw.volume import Volume

F = TypeVar("F", bound=Callable[..., Any])


class LocalEntrypoint:
    """``@app.local_entrypoint()``: runs on the caller's machine (``thaw run``)."""

    def __init__(self, raw_f: Callable[..., Any], app: App, name: str) -> None:
        self.raw_f = raw_f
        self.app = app
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<thaw.LocalEntrypoint {self.name}>"


class App:
    def __init__(
        self,
        name: str | None = None,
        *,
        image: Image | None = None,
        secrets: Sequence[Secret] = (),
        volumes: dict[str, Volume] | None = None,
    ) -> None:
        self._name = checked_name("app", name) if name is not None else None
        self.image = image
        self.secrets = list(secrets)
        self.volumes = dict(volumes or {})
        self._functions: dict[str, Function | Cls] = {}
        self._entrypoints: dict[str, LocalEntrypoint] = {}
        # Set while `app.run()` has it deployed, ephemeral, under that name.
        self._running_as: str | None = None
        # The gateway's id ("ap-..."), known for an app found by ``App.lookup``.
        self.app_id: str | None = None

    # ------------------------------------------------------------ names

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def running_name(self) -> str:
        """The name calls go to: the ephemeral app's during ``app.run()``, else the app's."""
        name = self._running_as or self._name
        if name is None:
            raise InvalidError(
                "this App has no name: give it one (thaw.App('name')) or call it inside `with app.run():`"
            )
        return name

    @property
    def registered_functions(self) -> dict[str, Function]:
        return {n: f for n, f in self._functions.items() if isinstance(f, Function)}

    @property
    def registered_classes(self) -> dict[str, Cls]:
        return {n: c for n, c in self._functions.items() if isinstance(c, Cls)}

    @property
    def registered_entrypoints(self) -> dict[str, LocalEntrypoint]:
        return dict(self._entrypoints)

    def specs(self) -> list[FunctionSpec]:
        return [f.spec for f in self._functions.values()]

    def _register(self, name: str, obj: Function | Cls) -> None:
        previous = self._functions.get(name)
        if previous is not None and previous.spec.qualname != obj.spec.qualname:
            warnings.warn(
                f"app {self._name or '(unnamed)'}: {obj.spec.qualname} replaces {previous.spec.qualname} "
                f"under the name {name!r}",
                stacklevel=3,
            )
        self._functions[name] = obj

    def include(self, other: App) -> App:
        """Register another app's functions and classes here too."""
        for name, obj in other._functions.items():
            self._register(name, obj)
        return self

    # ------------------------------------------------------------ decorators

    def function(
        self,
        _f: Callable[..., Any] | None = None,
        *,
        image: Image | None = None,
        gpu: str | list[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        ephemeral_disk: int | None = None,
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] = (),
        volumes: dict[str, Volume] | None = None,
        schedule: Schedule | None = None,
        enable_memory_snapshot: bool = False,
        experimental_options: dict[str, Any] | None = None,
        serialized: bool = False,
        name: str | None = None,
        keep_warm: int | None = None,
        concurrency_limit: int | None = None,
        container_idle_timeout: float | None = None,
        allow_concurrent_inputs: int | None = None,
    ) -> Any:
        """Make a function callable remotely: ``f.remote(...)``, ``f.map(...)``, ..."""
        options = {
            k: v for k, v in locals().items() if k not in ("self", "_f", "serialized", "name")
        }

        def decorate(raw_f: Callable[..., Any]) -> Function:
            if isinstance(raw_f, (Function, Cls, type)) or not callable(raw_f):
                raise InvalidError(f"@app.function() decorates a function, got {raw_f!r}")
            base = FunctionSpec(
                name=checked_name("function", name or raw_f.__name__),
                module=module_name(raw_f),
                qualname=raw_f.__qualname__,
                kind="function",
                **function_kind(raw_f),
            )
            spec = apply_options(base, self._with_defaults({**options, **marker_options(raw_f)}))
            function = Function(spec, raw_f, self, serialized=serialized)
            self._register(spec.name, function)
            return function

        return decorate(_f) if _f is not None else decorate

    def cls(
        self,
        _cls: type | None = None,
        *,
        image: Image | None = None,
        gpu: str | list[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        ephemeral_disk: int | None = None,
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] = (),
        volumes: dict[str, Volume] | None = None,
        enable_memory_snapshot: bool = False,
        experimental_options: dict[str, Any] | None = None,
        serialized: bool = False,
        keep_warm: int | None = None,
        concurrency_limit: int | None = None,
        container_idle_timeout: float | None = None,
        allow_concurrent_inputs: int | None = None,
    ) -> Any:
        """Make a class whose ``@thaw.method()``s are callable remotely: ``C().m.remote(...)``."""
        options = {k: v for k, v in locals().items() if k not in ("self", "_cls", "serialized")}

        def decorate(user_cls: type) -> Cls:
            if not isinstance(user_cls, type):
                raise InvalidError(f"@app.cls() decorates a class, got {user_cls!r}")
            fields = class_spec_fields(user_cls)
            web = fields.pop("web", None)
            base = FunctionSpec(
                name=checked_name("class", user_cls.__name__),
                module=module_name(user_cls),
                qualname=user_cls.__qualname__,
                kind="class",
                **fields,
            )
            spec = apply_options(
                base, self._with_defaults({**options, **marker_options(user_cls), "web": web})
            )
            cls = Cls(spec, user_cls, self)
            self._register(spec.name, cls)
            return cls

        return decorate(_cls) if _cls is not None else decorate

    def _with_defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        return merge_app_defaults(
            options, image=self.image, secrets=self.secrets, volumes=self.volumes
        )

    def local_entrypoint(self, _f: F | None = None, *, name: str | None = None) -> Any:
        """The function ``thaw run app.py`` calls on this machine, with command-line flags
        as its arguments."""

        def decorate(raw_f: F) -> F:
            entry_name = name or raw_f.__name__
            self._entrypoints[entry_name] = LocalEntrypoint(raw_f, self, entry_name)
            return raw_f

        return decorate(_f) if _f is not None else decorate

    # ------------------------------------------------------------ by name

    @staticmethod
    @aio_function
    async def lookup(
        name: str, *, create_if_missing: bool = False, environment_name: str | None = None
    ) -> App:
        """The app deployed as ``name``, for ``Function.from_name``/``Cls.from_name``
        and the like. With ``create_if_missing`` an app never deployed is a name
        that later deploys fill; without it, a missing app is a NotFoundError."""
        app = App(name)
        try:
            detail = await current().app(app.running_name)
        except NotFoundError:
            if not create_if_missing:
                raise NotFoundError(
                    f"no app named {name!r} is deployed (App.lookup(..., create_if_missing=True)"
                    " takes the name anyway)"
                ) from None
            return app
        app.app_id = detail.app.app_id or None
        return app

    # ------------------------------------------------------------ running

    def run(self, *, detach: bool = False, show_logs: bool | None = None) -> AppRun[App]:
        """``with app.run(): f.remote(...)``: the app deployed (ephemeral) for the
        block, stopped after it. Also ``async with``."""
        return AppRun(self, detach=detach, show_logs=show_logs)

    def deploy(self, name: str | None = None) -> DeployResponse:
        """Deploy (or update) the app under its name; it stays until stopped."""
        return deploy_app(self, name=name)

    def __repr__(self) -> str:
        return f"<thaw.App {self._name or '(unnamed)'}: {', '.join(self._functions) or 'empty'}>"


def find_apps(module: ModuleType) -> dict[str, App]:
    """The module's ``thaw.App``s by variable name (each app once)."""
    found: dict[str, App] = {}
    for var, value in vars(module).items():
        if isinstance(value, App) and all(value is not other for other in found.values()):
            found[var] = value
    return found
