"""One volume mounted in a directory, and its commits and reloads.

``load`` puts the volume's current version in the directory from the
node's caches: as an overlay (``volume_overlay``) whose read-only lower tree
hard-links the node's whole-file cache (``volume_files``), so a mount costs
a link per file and a directory per directory whatever their size; where
no overlay can be mounted, by copying each file in from the chunk cache.
``commit`` finds what changed since by size and mtime
(``volume_changes``: in an overlay's upper dir alone, in time O(changes);
in a copy by a walk of it all), hashes only those files, stores their new
chunks and sends one commit with the written and deleted paths;
``reload`` brings in what others committed since the version loaded,
without a full walk of the volume.
Files are whole: a reload replaces a file by a rename, never in place.
What it writes (and the directories on the way) belongs to ``owner``, the
container's process user, so a function on an image with a ``USER`` can
change its volume's files.

After each load, reload and commit, what the directory holds against the
version (``MountState``) is written beside it (``<root>.state``): an agent
that died leaves it, and its next life commits what the container wrote
meanwhile (``resume``, mounting the overlay again if a reboot took it)
before removing the directory. Whoever removes a mount's directory unmounts
it first (``remove``, or ``thaw_core.layers.remove_tree`` above it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

import msgspec
from thaw_core.image_users import ROOT, ImageUser
from thaw_core.layers import remove_tree
from thaw_core.schema import VolumeEntry, VolumeInfo
from thaw_core.volumes import CHUNK_SIZE, ChunkUploader, VolumeError, VolumesClient

from thaw_agent import volume_overlay as overlay
from thaw_agent.volume_cache import ChunkCache
from thaw_agent.volume_changes import OnDisk, Written, walk_overlay, walk_tree
from thaw_agent.volume_files import FileCache, mtime_ns

log = logging.getLogger("thaw.agent.volumes")

# Uploads at once by a commit: a large file, or a batch of small ones.
UPLOADS_AT_ONCE = 4
# A batch of small files: read, hashed and stored in a few trips to a thread.
BATCH_FILES = 500
BATCH_BYTES = 16 << 20


# path -> (size, mtime in ns, chunk digests)
Known = dict[str, tuple[int, int, tuple[str, ...]]]


class PendingCommit(msgspec.Struct, frozen=True):
    """A commit sent and not known to have landed: sent again under its id
    (the service applies one id once), then its files are known."""

    commit_id: str
    changes: list[VolumeEntry]
    deleted: list[str]
    stored: Known


class MountState(msgspec.Struct, frozen=True):
    """A mount's directory against its version, kept on the node's disk."""

    volume: VolumeInfo
    version: int
    known: Known
    pending: PendingCommit | None = None


_state_decoder = msgspec.json.Decoder(MountState)


class MountedVolume:
    def __init__(
        self,
        client: VolumesClient,
        cache: ChunkCache,
        volume: VolumeInfo,
        root: Path,
        owner: ImageUser = ROOT,
    ) -> None:
        self.client = client
        self.cache = cache
        self.volume = volume
        self.root = root
        self.owner = owner
        self.version = 0
        self._known: dict[str, OnDisk] = {}
        # Known paths committed or reloaded since the overlay was mounted: the
        # lower may not hold them (``volume_changes.walk_overlay``).
        self._unbacked: set[str] = set()
        self._uploader = ChunkUploader(client.blob)
        # Left by a previous life of the agent (``resume``): sent again first.
        self._pending: PendingCommit | None = None

    @property
    def state_file(self) -> Path:
        return self.root.with_name(self.root.name + ".state")

    @classmethod
    def resume(cls, client: VolumesClient, cache: ChunkCache, state_file: Path) -> MountedVolume:
        """The mount a previous life of the agent left at ``state_file``'s
        directory, as it last loaded or committed it (blocking read)."""
        state = _state_decoder.decode(state_file.read_bytes())
        root = state_file.with_suffix("")
        mounted = cls(client, cache, state.volume, root)
        mounted.version = state.version
        mounted._known = {p: OnDisk(*k) for p, k in state.known.items()}
        # Which of them the lower holds was not kept: each is looked up there
        # once, at the next commit.
        mounted._unbacked = set(mounted._known)
        mounted._pending = state.pending
        if overlay.layers_dir(root).is_dir() and not overlay.is_mounted(root):
            # A reboot took the overlay: its layers hold what the container
            # wrote. Mounted again (or refused, raising), never walked empty,
            # which would commit every file as deleted.
            overlay.mount(root, ROOT)  # ROOT: its upper dir keeps its owner
        return mounted

    async def _save(self, pending: PendingCommit | None = None) -> None:
        state = MountState(
            volume=self.volume,
            version=self.version,
            known=_known_state(self._known),
            pending=pending,
        )
        target = self.state_file

        def write() -> None:
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(msgspec.json.encode(state))
            os.replace(tmp, target)

        await asyncio.to_thread(write)

    async def load(self) -> None:
        """Put the volume's current version in ``root``: an overlay of the
        node's cached files where one can be mounted, else a copy of each."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        version, entries = await self.client.entries(self.volume.volume_id)
        if not await self._overlay(entries):
            await self._apply(entries)
        self.version = version
        await self._save()
        self.cache.evict_soon()

    async def _overlay(self, entries: list[VolumeEntry]) -> bool:
        """Mount ``entries`` as an overlay at ``root``; False (said once in
        the log) where none can be mounted."""
        why = overlay.refusal()
        if why is None:
            async with self.cache.in_use():
                await self.cache.ensure([d for e in entries if not e.deleted for d in e.chunks])
                why = await asyncio.to_thread(self._mount_overlay, entries)
            if why is None:
                return True
        overlay.say_once(why)
        return False

    def _mount_overlay(self, entries: list[VolumeEntry]) -> str | None:
        """None once mounted, else why not; no layers are left behind."""
        layers = overlay.layers_dir(self.root)
        if layers.exists():  # a load that failed half-way, or a directory reused
            remove_tree(layers)
        try:
            overlay.build_lower(layers / "lower", entries, FileCache(self.cache), self.owner)
        except BaseException:
            remove_tree(layers)
            raise
        try:
            overlay.mount(self.root, self.owner)
        except overlay.MountError as e:
            remove_tree(layers)
            # The reason without the path: said once per reason, not per mount.
            return f"mounting an overlay failed: {getattr(e, 'strerror', None) or e}"
        self._known = {
            e.path: OnDisk(e.size, mtime_ns(e), tuple(e.chunks))
            for e in entries
            if e.kind != "dir" and not e.deleted
        }
        self._unbacked = set()  # the lower holds every file just as known
        return None

    async def remove(self) -> None:
        """Unmount the directory and remove it, its layers and its state."""

        def remove() -> None:
            for d in (self.root, overlay.layers_dir(self.root)):
                remove_tree(d)  # unmounting first: never removing through the overlay
            self.state_file.unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def reload(self) -> int:
        """Bring in what was committed since the loaded version; answer how
        many paths changed."""
        version, entries = await self.client.entries(
            self.volume.volume_id, since_version=self.version
        )
        await self._apply(entries)
        self.version = max(self.version, version)
        if entries:
            await self._save()
            self.cache.evict_soon()
        return len(entries)

    async def _apply(self, entries: list[VolumeEntry]) -> None:
        def write() -> None:
            for e in entries:
                target = self.root / e.path
                known = self._known.get(e.path)
                if e.deleted:
                    self._known.pop(e.path, None)
                    self._unbacked.discard(e.path)
                    _remove(target)
                elif e.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                elif known is None or known.chunks != tuple(e.chunks) or not target.exists():
                    if target.is_dir() and not target.is_symlink():
                        _remove(target)
                    ns = self.cache.materialise(e.chunks, target, e.mode, e.mtime)
                    self._known[e.path] = OnDisk(e.size, ns, tuple(e.chunks))
                    self._unbacked.add(e.path)
                if not e.deleted:
                    self._own(target)

        async with self.cache.in_use():
            await self.cache.ensure([d for e in entries if not e.deleted for d in e.chunks])
            await asyncio.to_thread(write)

    def _own(self, path: Path) -> None:
        """``path`` and the directories above it, up to ``root``, the owner's.
        One already the owner's is left alone: in an overlay a chown would
        copy a lower file up, every byte of it."""
        if self.owner == ROOT:
            return
        while True:
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (self.owner.uid, self.owner.gid):
                os.lchown(path, self.owner.uid, self.owner.gid)
            if path == self.root or self.root not in path.parents:
                return
            path = path.parent

    def changes(self) -> tuple[list[Written], list[str]]:
        """Files written (new, or another size or mtime) and paths gone since
        they were loaded or committed (blocking). An overlay's are found in
        its upper dir, in time O(changes); a copy's by a walk of it all."""
        upper = overlay.layers_dir(self.root) / "upper"
        if upper.is_dir():
            return walk_overlay(
                str(self.root), str(upper), str(upper.with_name("lower")),
                self._known, self._unbacked,
            )  # fmt: skip
        return walk_tree(str(self.root), self._known)

    async def commit(self) -> VolumeInfo | None:
        """Commit what changed; None when nothing did. The commit is noted in
        the state file before it is sent: a previous life's commit that may
        have landed is sent again under its id first, so it lands once, and
        what it wrote is not sent again over what others committed since."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                await self._send(pending)
            except VolumeError as e:
                # Refused whole: what it carried is still changed on disk, so
                # the commit below carries it again.
                log.warning("a left-over commit was refused", extra={"error": e.message})
        written, gone = await asyncio.to_thread(self.changes)
        if not written and not gone:
            return None
        entries = await self._upload(written)
        stored = {
            e.path: OnDisk(e.size, st.st_mtime_ns, tuple(e.chunks))
            for e, (_, st, _) in zip(entries, written, strict=True)
        }
        pending = PendingCommit(uuid.uuid4().hex, list(entries), gone, _known_state(stored))
        await self._save(pending)
        return await self._send(pending)

    async def _upload(self, written: list[Written]) -> list[VolumeEntry]:
        """Store the chunks of the written files; their entries, in order.
        Files under one chunk go in batches (``upload_small``), larger ones
        one by one, a few of each at once. Each is read from its ``source``:
        an overlay's from its upper dir, not through the overlay."""
        gate = asyncio.Semaphore(UPLOADS_AT_ONCE)
        sizes: list[tuple[int, list[str]] | None] = [None] * len(written)

        async def large(i: int) -> None:
            async with gate:
                sizes[i] = await self._uploader.upload_file(Path(written[i].source))

        async def small(batch: list[int]) -> None:
            async with gate:
                # Strings, not Paths: 10,000 Paths cost more than reading the files.
                got = await self._uploader.upload_small([written[i].source for i in batch])
            # One that grew past a chunk since the walk is read whole.
            await asyncio.gather(*(large(i) for i, g in zip(batch, got, strict=True) if g is None))
            for i, g in zip(batch, got, strict=True):
                sizes[i] = sizes[i] if g is None else g

        await asyncio.gather(
            *(small(b) for b in _batches(written)),
            *(large(i) for i, w in enumerate(written) if w.stat.st_size >= CHUNK_SIZE),
        )
        entries = []
        for (rel, st, _), got in zip(written, sizes, strict=True):
            assert got is not None
            entries.append(VolumeEntry(
                path=rel, size=got[0], chunks=got[1], mode=st.st_mode & 0o7777,
                mtime=st.st_mtime_ns / 1e9,
            ))  # fmt: skip
        return entries

    async def _send(self, pending: PendingCommit) -> VolumeInfo:
        try:
            info = await self.client.commit(
                self.volume.volume_id,
                pending.changes,
                pending.deleted,
                base_version=self.version,
                commit_id=pending.commit_id,
            )
        except VolumeError:
            # A chunk this uploader stored may have been collected since (the
            # service refuses naming it): the next try looks in the store again.
            self._uploader.forget()
            raise
        self._known.update({p: OnDisk(*k) for p, k in pending.stored.items()})
        self._unbacked.update(pending.stored)
        for p in pending.deleted:
            self._known.pop(p, None)
            self._unbacked.discard(p)
        if info.version == self.version + 1:
            # Nobody committed in between: this directory is that version.
            self.version = info.version
        await self._save()
        return info


def _batches(written: list[Written]) -> list[list[int]]:
    """The indexes of the files under one chunk, in batches of at most
    ``BATCH_FILES`` files and ``BATCH_BYTES`` bytes (as the walk saw them)."""
    out: list[list[int]] = [[]]
    held = 0
    for i, (_, st, _) in enumerate(written):
        if st.st_size >= CHUNK_SIZE:
            continue
        if len(out[-1]) >= BATCH_FILES or (out[-1] and held + st.st_size > BATCH_BYTES):
            out.append([])
            held = 0
        out[-1].append(i)
        held += st.st_size
    return [b for b in out if b]


def _known_state(known: dict[str, OnDisk]) -> Known:
    return {p: (k.size, k.mtime_ns, k.chunks) for p, k in known.items()}


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        for dirpath, dirnames, filenames in os.walk(target, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                os.rmdir(os.path.join(dirpath, name))
        target.rmdir()
    else:
        target.unlink(missing_ok=True)
