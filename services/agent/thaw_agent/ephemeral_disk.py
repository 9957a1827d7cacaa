"""``ephemeral_disk=`` (MiB): a size limit on a container's writable layer.

The overlay's upper and work dirs then live on a file system of that size of
their own: an ext4 image (a sparse file in the container's dir: it takes the
node's disk only as it is written) loop-mounted at ``paths.rw``. Writing past
it is ENOSPC in the function, and no other container's or the node's disk
fills up. A tmpfs would have held the limit too, but its pages are charged to
the container's memory cgroup: a function given 256 MiB of memory and 10 GiB
of disk would be OOM-killed at its first 256 MiB written.

Without the option the upper dir is a plain dir on the node's disk, as before.
The image file and the mount go with the container's dir at teardown
(``layers.remove_tree`` unmounts what is below it; the loop device clears
itself once unmounted).
"""

from __future__ import annotations

import subprocess

from thaw_agent.layout import ContainerPaths

# The container's /tmp is a tmpfs (memory), not this layer: writes there
# count against its memory limit instead.
IMAGE_NAME = "rw.img"


class EphemeralDiskError(RuntimeError):
    pass


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, check=False)
    if done.returncode != 0:
        raise EphemeralDiskError(
            f"ephemeral disk: {args[0]} failed: {done.stderr.decode(errors='replace').strip()}"
        )


def make_writable_layer(paths: ContainerPaths, disk_mb: int | None) -> None:
    """The container's dirs, its upper and work dirs on a ``disk_mb`` MiB
    file system of their own when it asks for one."""
    paths.make_outer()
    if disk_mb is not None:
        image = paths.dir / IMAGE_NAME
        with open(image, "wb") as f:
            f.truncate(disk_mb * 1024 * 1024)
        # No journal and no reserved blocks: the whole size is the function's,
        # and the file system lives only as long as the container.
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", str(image)])
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(paths.rw)])
        # lost+found is mkfs's, not the function's.
        (paths.rw / "lost+found").rmdir()
    paths.make_layer()
