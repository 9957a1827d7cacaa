"""The parts of runc's ``config.json`` that every thaw container shares:
function containers (the agent) and build steps (the builder)."""

from __future__ import annotations

import copy
from typing import Any

# Where the builder installs the runtime's third-party packages in an image
# whose Python is not the agent's own (thaw_builder.runtime_layer); the agent
# puts it on the runtime's path in such an image's containers.
RUNTIME_DIR_IN_IMAGE = "/opt/thaw/runtime"

# The kernel filesystems a Linux process expects, as `runc spec` lays them
# out, plus a private /tmp. Callers append their own binds after these.
_STANDARD_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/tmp",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777"],
    },
]


def standard_mounts() -> list[dict[str, Any]]:
    """A fresh copy: callers extend it and runc's config is written per container."""
    return copy.deepcopy(_STANDARD_MOUNTS)


# /proc and /sys entries a container must not read or write (runc spec's list).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
