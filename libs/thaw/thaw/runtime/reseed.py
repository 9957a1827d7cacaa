"""Fresh random state after a memory snapshot restore.

Every container restored from one snapshot starts with the same memory, so
the generators seeded before the snapshot would draw the same numbers in all
of them. Reseed the ones the user's code has imported (never import one just
to seed it: torch alone costs seconds) from ``os.urandom``, which the kernel
serves fresh in each process.
"""

from __future__ import annotations

import os
import random
import sys


def _seed(bits: int) -> int:
    return int.from_bytes(os.urandom(bits // 8), "little")


def reseed_generators() -> list[str]:
    """Reseed random, numpy's and torch's global generators; the names of those reseeded."""
    random.seed(os.urandom(32))
    done = ["random"]
    numpy = sys.modules.get("numpy")
    if numpy is not None and hasattr(numpy, "random"):
        numpy.random.seed(_seed(32))  # the legacy global RandomState takes < 2**32
        done.append("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(_seed(63))  # CPU and (lazily) every CUDA device
        done.append("torch")
    return done
