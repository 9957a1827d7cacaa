"""``thaw.Cls``: a class whose methods run remotely, on instances built in the
container from ``thaw.parameter()`` values.

``Inference(model="x")`` gives an :class:`Obj`; ``obj.predict.remote(...)``
sends an input to the class's function (``spec.name`` = the class name) with
``method="predict"`` and the constructor parameters pickled as ``params``
(empty when none were given, so that the container reuses its default instance).
"""

from __future__ import annotations

from typing import Any

from thaw_core.schema import FunctionSpec

from thaw import _cls
from thaw._app_ref import AppBound, AppRef
from thaw._serialization import dumps
from thaw._spec import checked_name
from thaw._with_options import Variant, WithOptions
from thaw.client import CallTarget
from thaw.exception import InvalidError
from thaw.functions import Invocable, function_kind


class Cls(WithOptions, AppBound):
    """What ``@app.cls`` returns. ``.spec`` describes it; ``.user_cls`` is the
    user's class, unchanged (the runtime instantiates it)."""

    def __init__(
        self,
        spec: FunctionSpec,
        user_cls: type | None,
        app: AppRef | None = None,
        *,
        app_name: str | None = None,
        variant: Variant | None = None,
    ) -> None:
        super().__init__(app, app_name)
        self.spec = spec
        self.user_cls = user_cls
        # Set by with_options: calls go to the deployed class's variant it makes.
        self._variant = variant
        self._generators = (
            frozenset(name for name, f in _cls.hooks(user_cls).methods.items() if _cls_generator(f))
            if user_cls is not None
            else frozenset()
        )
        if user_cls is not None:
            self.__name__ = user_cls.__name__
            self.__qualname__ = user_cls.__qualname__
            self.__module__ = user_cls.__module__
            self.__doc__ = user_cls.__doc__

    @classmethod
    def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None) -> Cls:
        """A class of a deployed app, by name; its methods are not checked here."""
        spec = FunctionSpec(
            name=checked_name("class", name), module="", qualname=name, kind="class"
        )
        return cls(spec, None, app_name=checked_name("app", app_name))

    lookup = from_name

    def _with_variant(self, variant: Variant) -> Cls:
        return Cls(variant.spec, self.user_cls, self.app, app_name=self._app_name, variant=variant)

    def __reduce__(self) -> tuple[Any, ...]:
        # Passed as an argument, a class travels as its name, not its app and
        # code; a with_options handle as its base's name and its overrides.
        if self._variant is not None:
            v = self._variant
            return (_cls_by_name, (self.app_name, v.base.name, v.overrides.encode()))
        return (_cls_by_name, (self.app_name, self.spec.name))

    def __call__(self, *args: Any, **params: Any) -> Obj:
        if args:
            raise InvalidError(
                f"{self.spec.name}(...) takes its thaw.parameter() values as keyword arguments only"
            )
        if self.user_cls is not None:
            try:
                _cls.check_params(self.user_cls, params)
            except TypeError as e:
                raise InvalidError(str(e)) from None
        return Obj(self, params)

    def __repr__(self) -> str:
        return (
            f"<thaw.Cls {self.app_name if (self.app or self._app_name) else '?'}/{self.spec.name}>"
        )


def _cls_by_name(app_name: str, name: str, options: bytes = b"") -> Cls:
    # Module-level: pickle refers to it by name (a classmethod would be pickled by value).
    cls = Cls.from_name(app_name, name)
    if not options:
        return cls
    variant = Variant.decoded(cls.spec, options)
    return Cls(variant.spec, None, app_name=app_name, variant=variant)


class Obj:
    """An instance handle: its methods are ``BoundMethod``s."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        # Sorted so that equal parameters give equal bytes: the container
        # keeps one instance per distinct encoding.
        self._encoded = dumps(dict(sorted(params.items()))) if params else b""
        self._local: object | None = None

    def __getattr__(self, name: str) -> BoundMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        spec = self._cls.spec
        if self._cls.user_cls is not None and name not in spec.methods:
            raise AttributeError(
                f"{spec.name} has no @thaw.method() named {name!r}; its methods: {', '.join(spec.methods) or 'none'}"
            )
        return BoundMethod(self, name)

    def _local_instance(self) -> object:
        """An instance here, its enter hooks run (both phases), as a container would."""
        if self._local is None:
            user_cls = self._cls.user_cls
            if user_cls is None:
                raise InvalidError(
                    f"{self._cls.spec.name} was looked up by name: it has no local code to run"
                )
            instance = _cls.instantiate(user_cls, self._params)
            found = _cls.hooks(user_cls)
            for hook in (*found.enter_snap, *found.enter_nosnap):
                hook(instance)
            self._local = instance
        return self._local

    def __repr__(self) -> str:
        return (
            f"<{self._cls.spec.name}({', '.join(f'{k}={v!r}' for k, v in self._params.items())})>"
        )


class BoundMethod(Invocable):
    def __init__(self, obj: Obj, name: str) -> None:
        self._obj = obj
        self._name = name

    def _target(self) -> CallTarget:
        cls = self._obj._cls
        if cls._variant is not None:
            return cls._variant.target(cls.app_name, self._name, self._obj._encoded)
        return CallTarget(cls.app_name, cls.spec.name, self._name, self._obj._encoded)

    def _is_generator(self) -> bool | None:
        cls = self._obj._cls
        return None if cls.user_cls is None else self._name in cls._generators

    def local(self, *args: Any, **kwargs: Any) -> Any:
        instance = self._obj._local_instance()
        return getattr(instance, self._name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<thaw method {self._label}>"


def class_spec_fields(user_cls: type) -> dict[str, Any]:
    """The parts of a class's spec that come from the class itself."""
    methods = _cls.hooks(user_cls).methods
    web = {
        name: dict(value.__thaw_web__)
        for name, value in _cls.members(user_cls).items()
        if callable(value) and hasattr(value, "__thaw_web__")
    }
    return {
        "methods": list(methods),
        "is_async": any(function_kind(f)["is_async"] for f in methods.values()),
        "is_generator": any(_cls_generator(f) for f in methods.values()),
        **({"web": {"methods": web}} if web else {}),
    }


def _cls_generator(method: Any) -> bool:
    return bool(getattr(method, "__thaw_is_generator__", False))
