"""Decorator options -> ``FunctionSpec``: one place for ``@app.function``,
``@app.cls`` and ``Cls.with_options``, so that each option is checked and
converted once.

An option given as ``None`` is "not given": the spec keeps what it had.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from thaw_core import gpu_names
from thaw_core.schema import BatchSpec, FunctionSpec, ImageRef, check_name
from thaw_core.schema.functions import MIN_EPHEMERAL_DISK_MB
from thaw_core.variants import FunctionOverrides

from thaw.exception import InvalidError
from thaw.image import Image
from thaw.retries import Retries, retry_policy
from thaw.schedule import Schedule
from thaw.secret import Secret
from thaw.secret import refs as secret_refs
from thaw.volume import Volume, volume_mounts

# Older Modal names that still appear in code found in the wild.
ALIASES = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
    "allow_concurrent_inputs": "max_inputs",
}


def checked_name(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except ValueError as e:
        raise InvalidError(str(e)) from None


def gpu_request(gpu: str | Sequence[str]) -> str:
    """Normalised GPU request: its choices in order of preference, comma-joined."""
    try:
        return gpu_names.normalise(gpu if isinstance(gpu, str) else list(gpu))
    except ValueError as e:
        raise InvalidError(str(e)) from None


def _number(option: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    if isinstance(value, tuple):  # Modal's (request, limit): the request is what we schedule on
        value = value[0]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
    ):
        raise InvalidError(
            f"{option} must be {'an integer' if integer else 'a number'}, got {value!r}"
        )
    if value < minimum:
        raise InvalidError(f"{option} must be at least {minimum:g}, got {value!r}")
    return value


def _request_limit(
    option: str, value: Any, *, minimum: float, integer: bool = False
) -> tuple[Any, Any]:
    """Modal's ``(request, limit)``, or a request alone that is its own limit."""
    request = _number(option, value, minimum=minimum, integer=integer)
    if not isinstance(value, tuple) or len(value) < 2:
        return request, request
    limit = _number(f"{option} limit", value[1], minimum=minimum, integer=integer)
    if limit < request:
        raise InvalidError(f"{option}: the limit {limit!r} is below the request {request!r}")
    return request, limit


def _env(env: dict[str, str | None]) -> dict[str, str]:
    bad = [
        k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, (str, type(None)))
    ]
    if bad:
        raise InvalidError(f"env maps names to strings, bad entries: {bad!r}")
    return {k: v for k, v in env.items() if v is not None}


def apply_options(spec: FunctionSpec, options: dict[str, Any]) -> FunctionSpec:
    """``spec`` with the given options applied (``None`` values are skipped)."""
    updates: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    autoscale: dict[str, Any] = {}
    experimental = dict(spec.experimental_options)
    for option, value in options.items():
        if value is None:
            continue
        option = ALIASES.get(option, option)
        match option:
            case "image":
                if not isinstance(value, Image):
                    raise InvalidError(f"image must be a thaw.Image, got {value!r}")
                updates["image"] = msgspec.convert(value.spec(), ImageRef)
            case "gpu":
                resources["gpu"] = gpu_request(value)
            case "cpu":
                request, limit = _request_limit("cpu", value, minimum=0.001)
                resources["cpu"], resources["cpu_limit"] = float(request), float(limit)
            case "memory":
                request, limit = _request_limit("memory (MiB)", value, minimum=1, integer=True)
                resources["memory_mb"], resources["memory_limit_mb"] = request, limit
            case "ephemeral_disk":
                # MiB, as upstream.
                resources["ephemeral_disk_mb"] = _number(
                    "ephemeral_disk (MiB)", value, minimum=MIN_EPHEMERAL_DISK_MB, integer=True
                )
            case "timeout":
                updates["timeout_s"] = float(_number("timeout", value, minimum=1))
            case "retries":
                if not isinstance(value, (int, Retries)):
                    raise InvalidError(f"retries must be an int or thaw.Retries, got {value!r}")
                updates["retries"] = retry_policy(value)
            case "min_containers" | "buffer_containers":
                autoscale[option] = _number(option, value, minimum=0, integer=True)
            case "max_containers":
                autoscale[option] = _number(option, value, minimum=1, integer=True)
            case "scaledown_window":
                autoscale["scaledown_window_s"] = float(
                    _number("scaledown_window", value, minimum=1)
                )
            case "max_inputs":
                updates["max_inputs"] = _number("max_inputs", value, minimum=1, integer=True)
            case "batch":
                updates["batch"] = msgspec.convert(value, BatchSpec)
            case "env":
                updates["env"] = {**spec.env, **_env(value)}
            case "secrets":
                updates["secrets"] = [*spec.secrets, *secret_refs(value)]
            case "volumes":
                if not isinstance(value, dict):
                    raise InvalidError(f"volumes maps mount paths to thaw.Volume, got {value!r}")
                mounts = {m.path: m for m in (*spec.volumes, *volume_mounts(value))}
                updates["volumes"] = list(mounts.values())
            case "schedule":
                if not isinstance(value, Schedule):
                    raise InvalidError(
                        f"schedule must be thaw.Period(...) or thaw.Cron(...), got {value!r}"
                    )
                updates["schedule"] = value.spec()
            case "enable_memory_snapshot":
                updates["enable_memory_snapshot"] = bool(value)
            case "experimental_options":
                if not isinstance(value, dict):
                    raise InvalidError(f"experimental_options must be a dict, got {value!r}")
                experimental.update(value)
            case "web":
                experimental["web"] = value
            case _:
                raise InvalidError(f"unknown option {option!r}")
    if resources:
        updates["resources"] = msgspec.structs.replace(spec.resources, **resources)
    if autoscale:
        updates["autoscale"] = msgspec.structs.replace(spec.autoscale, **autoscale)
    if experimental != spec.experimental_options:
        updates["experimental_options"] = experimental
    spec = msgspec.structs.replace(spec, **updates)
    if spec.batch is not None and spec.max_inputs < spec.batch.max_batch_size:
        # The container must hold a whole batch's inputs at once.
        spec = msgspec.structs.replace(spec, max_inputs=spec.batch.max_batch_size)
    scale = spec.autoscale
    if scale.max_containers is not None and scale.max_containers < scale.min_containers:
        raise InvalidError(
            f"max_containers ({scale.max_containers}) is below min_containers ({scale.min_containers})"
        )
    return spec


# with_options' options -> the FunctionOverrides fields they set, read off a
# blank spec they were applied to (so each is checked and converted as above).
_OVERRIDDEN: dict[str, Any] = {
    "cpu": lambda s: {"cpu": s.resources.cpu, "cpu_limit": s.resources.cpu_limit},
    "memory": lambda s: {
        "memory_mb": s.resources.memory_mb,
        "memory_limit_mb": s.resources.memory_limit_mb,
    },
    "gpu": lambda s: {"gpu": s.resources.gpu},
    "timeout": lambda s: {"timeout_s": s.timeout_s},
    "retries": lambda s: {"retries": s.retries},
    "max_containers": lambda s: {"max_containers": s.autoscale.max_containers},
    "buffer_containers": lambda s: {"buffer_containers": s.autoscale.buffer_containers},
    "scaledown_window": lambda s: {"scaledown_window_s": s.autoscale.scaledown_window_s},
    "env": lambda s: {"env": s.env},
    "secrets": lambda s: {"secrets": s.secrets},
    "volumes": lambda s: {"volumes": s.volumes},
}
# Modal options with nothing behind them here: refused, by name.
_NOT_SERVED = {
    "region": "thaw has no regions: every node of the fleet is one region",
    "cloud": "thaw runs on its own nodes, not on a cloud provider's",
}


def with_options_overrides(options: dict[str, Any]) -> FunctionOverrides:
    """What ``with_options(**options)`` changes (``None`` values: not given)."""
    given = {k: v for k, v in options.items() if v is not None}
    refused = [f"{k}= ({_NOT_SERVED[k]})" for k in given if k in _NOT_SERVED]
    if refused:
        raise InvalidError(f"with_options: not supported by thaw: {'; '.join(refused)}")
    unknown = sorted(set(given) - set(_OVERRIDDEN))
    if unknown:
        raise InvalidError(f"with_options: unknown options {', '.join(unknown)}")
    blank = apply_options(FunctionSpec(name="blank", module="", qualname=""), given)
    fields: dict[str, Any] = {}
    for option in given:
        fields.update(_OVERRIDDEN[option](blank))
    return FunctionOverrides(**fields)


def merge_app_defaults(
    options: dict[str, Any],
    *,
    image: Image | None,
    secrets: Sequence[Secret],
    volumes: dict[str, Volume],
) -> dict[str, Any]:
    """An App's image is the default; its secrets and volumes come before the function's own."""
    merged = dict(options)
    if merged.get("image") is None:
        merged["image"] = image
    if secrets:
        merged["secrets"] = [*secrets, *(merged.get("secrets") or [])]
    if volumes:
        merged["volumes"] = {**volumes, **(merged.get("volumes") or {})}
    return merged


def marker_options(obj: Any) -> dict[str, Any]:
    """What ``@thaw.concurrent``, ``@thaw.batched`` and the web decorators
    left on a function or class."""
    found: dict[str, Any] = {}
    if (concurrent := getattr(obj, "__thaw_concurrent__", None)) is not None:
        found["max_inputs"] = concurrent["max_inputs"]
    if (batch := getattr(obj, "__thaw_batched__", None)) is not None:
        if concurrent is not None:
            raise InvalidError(
                f"{obj.__qualname__}: @thaw.batched and @thaw.concurrent cannot be combined "
                "(a batched function already runs up to max_batch_size inputs at once)"
            )
        found["batch"] = batch
    if isinstance(obj, type):
        batched = {
            n: m.__thaw_batched__ for n, m in vars(obj).items() if hasattr(m, "__thaw_batched__")
        }
        if len(batched) > 1:
            # The class's containers hold one batch's inputs at once: one size.
            raise InvalidError(
                f"{obj.__qualname__}: only one method of a class can be @thaw.batched, "
                f"found {', '.join(batched)}"
            )
        if batched:
            found["batch"] = next(iter(batched.values()))
    if (web := getattr(obj, "__thaw_web__", None)) is not None:
        found["web"] = dict(web)
    return found


def module_name(obj: Any) -> str:
    """The name the container imports ``obj``'s module by. A script's
    ``__main__`` is named after its file (and its package, if it is in one)."""
    name = obj.__module__
    if name != "__main__":
        return name
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":  # python -m pkg.mod
        return spec.name
    file = getattr(main, "__file__", None)
    if not file:
        return "__main__"  # an interactive session: deploying it is refused with a clear error
    from thaw.bundle import import_root

    return import_root(Path(file))[1]
