"""The seccomp filter every function container runs under (OCI
``linux.seccomp``): what Docker's default profile denies a container without
extra capabilities, as data.

Docker's profile is an allow-list; this is the same line drawn the other way
round (allow by default, deny the listed calls with EPERM), so that a syscall
newer than the list is not refused for being new. Denied, as in Docker:
kernel modules, kexec, reboot, clock and time setting, swap, quotas, accounting,
keyrings, BPF, perf events, ptrace and cross-process memory access, NUMA
policy, the mount API and ``pivot_root``, ``unshare``/``setns`` and namespace
flags on ``clone`` (no nested namespaces: a container cannot build itself a
user namespace where it is root again), ``userfaultfd``, handles by
``open_by_handle_at``, and io_uring (its
submissions skip seccomp). ``clone3`` answers ENOSYS, so libc falls back to
``clone``, whose flags the filter can read (as Docker does). Not carried over: Docker's test of
``personality``'s argument (one rule cannot test an argument against several
values).

runc ignores names its libseccomp does not know on this architecture (``vm86``
on x86_64 ...), so the list stays one for every architecture. A snapshot keeps
the filter: CRIU dumps and restores it with the process.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

DENIED_SYSCALLS: tuple[str, ...] = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_settime",
    "clock_settime64",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
)

# clone(2) flags that make a namespace (CLONE_NEWNS ... CLONE_NEWNET).
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x0000_0080,  # CLONE_NEWTIME
    0x0002_0000,  # CLONE_NEWNS
    0x0200_0000,  # CLONE_NEWCGROUP
    0x0400_0000,  # CLONE_NEWUTS
    0x0800_0000,  # CLONE_NEWIPC
    0x1000_0000,  # CLONE_NEWUSER
    0x2000_0000,  # CLONE_NEWPID
    0x4000_0000,  # CLONE_NEWNET
)
# The architectures a process on this machine may call the kernel as (a
# 32-bit binary's syscalls have other numbers, so they need the filter too).
ARCHITECTURES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def _deny(names: list[str], **rule: Any) -> dict[str, Any]:
    return {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM, **rule}


def default_profile() -> dict[str, Any]:
    """``linux.seccomp`` for a function container."""
    # A rule's argument tests are ANDed: one rule per namespace flag.
    clone_with_namespaces = [
        _deny(
            ["clone"],
            args=[{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        )
        for flag in CLONE_NAMESPACE_FLAGS
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES.get(platform.machine(), []),
        "syscalls": [
            _deny(list(DENIED_SYSCALLS)),
            *clone_with_namespaces,
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ],
    }
