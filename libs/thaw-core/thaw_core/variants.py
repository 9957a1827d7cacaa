"""``Function.with_options`` / ``Cls.with_options`` on the platform.

A handle made by ``with_options`` calls a *variant*: a function of the same
app version, with the same code and image, whose spec is the deployed one with
the overrides applied (so its containers get the resources asked for). The
gateway derives and stores it on the first call through such a handle
(``POST /v1/functions/{app}/{function}/variants``); the SDK applies the same
:func:`derive` to its local spec, so both agree on what the variant is.

A variant is named after its base function and a digest of its overrides, so
the same overrides always name the same variant (registering is idempotent)
and the name stays a valid function name.
"""

from __future__ import annotations

import hashlib

import msgspec

from thaw_core.schema import FunctionSpec, RetryPolicy, SecretRef, VolumeMount

# What a variant's name adds to its base's: "-w" and 12 hex digits of the
# digest. The base part is cut to keep the whole within the 63 a name may have.
_DIGEST_CHARS = 12
_MAX_NAME = 63
_BASE_CHARS = _MAX_NAME - len("-w") - _DIGEST_CHARS


class FunctionOverrides(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What ``with_options`` replaces (None: kept) or adds (secrets, volumes, env)."""

    cpu: float | None = None
    cpu_limit: float | None = None
    memory_mb: int | None = None
    memory_limit_mb: int | None = None
    gpu: str | None = None
    timeout_s: float | None = None
    retries: RetryPolicy | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window_s: float | None = None
    env: dict[str, str] = {}
    secrets: list[SecretRef] = []
    volumes: list[VolumeMount] = []

    def merged(self, later: FunctionOverrides) -> FunctionOverrides:
        """These overrides, then ``later``'s (``a.with_options(...).with_options(...)``)."""
        fields = {
            f: getattr(later, f)
            for f in self.__struct_fields__
            if f not in ("env", "secrets", "volumes") and getattr(later, f) is not None
        }
        mounts = {m.path: m for m in (*self.volumes, *later.volumes)}
        return msgspec.structs.replace(
            self,
            **fields,
            env={**self.env, **later.env},
            secrets=[*self.secrets, *later.secrets],
            volumes=list(mounts.values()),
        )

    def encode(self) -> bytes:
        """Canonical bytes: equal overrides, equal bytes (the variant's digest)."""
        return msgspec.json.encode(self, order="sorted")

    @property
    def empty(self) -> bool:
        return self == FunctionOverrides()


def variant_name(base: str, overrides: FunctionOverrides) -> str:
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{base[:_BASE_CHARS]}-w{digest}"


def derive(spec: FunctionSpec, overrides: FunctionOverrides) -> FunctionSpec:
    """The variant of ``spec`` that ``overrides`` make.

    What a variant does not inherit, and why: a schedule (the base already
    runs on it; a second copy would run every tick twice), a web endpoint (its
    URL is the base's), and the base's warm pool (``min_containers``: a caller's
    variant must not keep containers up on its own; ``buffer_containers`` only
    when given)."""
    o = overrides
    resources = {
        k: v
        for k, v in (
            ("cpu", o.cpu),
            ("cpu_limit", o.cpu_limit),
            ("memory_mb", o.memory_mb),
            ("memory_limit_mb", o.memory_limit_mb),
            ("gpu", o.gpu),
        )
        if v is not None
    }
    autoscale = msgspec.structs.replace(
        spec.autoscale,
        min_containers=0,
        buffer_containers=o.buffer_containers or 0,
        **{
            k: v
            for k, v in (
                ("max_containers", o.max_containers),
                ("scaledown_window_s", o.scaledown_window_s),
            )
            if v is not None
        },
    )
    mounts = {m.path: m for m in (*spec.volumes, *o.volumes)}
    experimental = {k: v for k, v in spec.experimental_options.items() if k != "web"}
    return msgspec.structs.replace(
        spec,
        name=variant_name(spec.name, o),
        variant_of=spec.name,
        resources=msgspec.structs.replace(spec.resources, **resources),
        autoscale=autoscale,
        timeout_s=spec.timeout_s if o.timeout_s is None else o.timeout_s,
        retries=spec.retries if o.retries is None else o.retries,
        env={**spec.env, **o.env},
        secrets=[*spec.secrets, *o.secrets],
        volumes=list(mounts.values()),
        schedule=None,
        experimental_options=experimental,
    )
