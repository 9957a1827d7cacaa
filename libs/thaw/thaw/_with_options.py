"""``with_options`` for both kinds of handle (``Function`` and ``Cls``).

One signature and one way to make the variant a handle calls; each kind says
only how to build a handle of itself around a variant (``_with_variant``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Self

import msgspec
from thaw_core.schema import FunctionSpec
from thaw_core.variants import FunctionOverrides, derive

from thaw._spec import with_options_overrides
from thaw.client import CallTarget


class Variant(NamedTuple):
    """What a ``with_options`` handle calls: the function it was made from
    (``base``, as this process knows it) and all the overrides given since."""

    base: FunctionSpec
    overrides: FunctionOverrides

    @classmethod
    def of(cls, spec: FunctionSpec, earlier: Variant | None, options: dict[str, Any]) -> Variant:
        """``with_options(**options)`` on a handle of ``spec`` (a variant's
        handle when ``earlier`` is set: the new options come on top of its)."""
        given = with_options_overrides(options)
        if earlier is None:
            return cls(spec, given)
        return cls(earlier.base, earlier.overrides.merged(given))

    @classmethod
    def decoded(cls, base: FunctionSpec, options: bytes) -> Variant:
        """The variant of ``base`` that encoded overrides (``CallTarget.options``) make."""
        return cls(base, msgspec.json.decode(options, type=FunctionOverrides))

    @property
    def spec(self) -> FunctionSpec:
        """The variant's spec, as the gateway derives it from the deployed one."""
        return derive(self.base, self.overrides)

    def target(self, app: str, method: str | None = None, params: bytes = b"") -> CallTarget:
        return CallTarget(app, self.base.name, method, params, self.overrides.encode())


class WithOptions:
    """A handle that ``with_options`` can make variants of (``spec`` and
    ``_variant`` are set by the handle's own ``__init__``)."""

    spec: FunctionSpec
    _variant: Variant | None

    def _with_variant(self, variant: Variant) -> Self:
        """A handle like this one whose calls go to ``variant``."""
        raise NotImplementedError

    def with_options(
        self,
        *,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | list[str] | None = None,
        env: dict[str, str | None] | None = None,
        secrets: list[Any] | None = None,
        volumes: dict[str, Any] | None = None,
        retries: Any = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
        timeout: int | None = None,
        region: Any = None,
        cloud: Any = None,
    ) -> Self:
        """The same function or class with some options replaced, as a new
        handle: its calls run in containers of their own with those options
        (a variant of the deployed one, registered on its first call)."""
        options = {k: v for k, v in locals().items() if k != "self"}
        return self._with_variant(Variant.of(self.spec, self._variant, options))
