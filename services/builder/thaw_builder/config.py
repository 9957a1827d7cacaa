"""The builder's own settings, from ``THAW_BUILDER_*`` variables.

| variable                      | default                                   |
|-------------------------------|-------------------------------------------|
| THAW_BUILDER_DIR              | $THAW_STATE_DIR/builder                   |
| THAW_BUILDER_CONCURRENCY      | 2 (builds at once)                        |
| THAW_BUILDER_STEP_TIMEOUT_S   | 1800 (one step's command)                 |
| THAW_BUILDER_CACHE_GB         | 20 (unpacked layers kept on this machine) |
| THAW_BUILDER_ZSTD_LEVEL       | 3                                         |
| THAW_ROOTFS                   | the default rootfs (thaw_core.hosttools)  |

Everything the builder writes lives under THAW_BUILDER_DIR, which must be on
a file system that supports overlayfs upper dirs (ext4, xfs): ``layers/`` is
the cache of unpacked layers (the ``LayerCache``; a step is built in its
``.tmp/`` and its upper dir renamed into the cache when done), ``runc/`` the
state of build containers and ``pip-cache/`` pip's download cache, shared by
builds and never part of a layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from thaw_core import hosttools
from thaw_core.config import Settings


@dataclass(frozen=True)
class BuilderConfig:
    root: Path
    rootfs: Path
    concurrency: int = 2
    step_timeout_s: float = 1800.0
    cache_bytes: int = 20 << 30
    zstd_level: int = 3

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str] | None = None) -> BuilderConfig:
        e = os.environ if env is None else env
        return cls(
            root=Path(e.get("THAW_BUILDER_DIR") or settings.state_dir / "builder").expanduser(),
            rootfs=hosttools.default_rootfs(),
            concurrency=max(1, int(e.get("THAW_BUILDER_CONCURRENCY", "2"))),
            step_timeout_s=float(e.get("THAW_BUILDER_STEP_TIMEOUT_S", "1800")),
            cache_bytes=int(float(e.get("THAW_BUILDER_CACHE_GB", "20")) * (1 << 30)),
            zstd_level=int(e.get("THAW_BUILDER_ZSTD_LEVEL", "3")),
        )

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def runc_root(self) -> Path:
        return self.root / "runc"

    @property
    def pip_cache(self) -> Path:
        return self.root / "pip-cache"
