"""``thaw.Secret``: environment variables a function gets at run time.

A named secret (``Secret.from_name``) is recorded by name into
``FunctionSpec.secrets`` and resolved by the platform; one made from values
(``from_dict``, ``from_local_environ``) goes into ``FunctionSpec.env``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from thaw_core.schema import check_name

from thaw.exception import InvalidError


class Secret:
    def __init__(self, *, name: str | None = None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.env = env or {}

    @classmethod
    def from_name(
        cls, name: str, *, environment_name: str | None = None, required_keys: Sequence[str] = ()
    ) -> Secret:
        try:
            return cls(name=check_name("secret", name))
        except ValueError as e:
            raise InvalidError(str(e)) from None

    @classmethod
    def from_dict(cls, env: dict[str, str | None]) -> Secret:
        bad = [
            k
            for k, v in env.items()
            if not isinstance(k, str) or not isinstance(v, (str, type(None)))
        ]
        if bad:
            raise InvalidError(f"Secret.from_dict takes str -> str, bad keys: {bad!r}")
        return cls(env={k: v for k, v in env.items() if v is not None})

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> Secret:
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ: not set here: {', '.join(missing)}")
        return cls(env={k: os.environ[k] for k in env_keys})

    def __repr__(self) -> str:
        return (
            f"Secret.from_name({self.name!r})"
            if self.name
            else f"Secret.from_dict({sorted(self.env)})"
        )
