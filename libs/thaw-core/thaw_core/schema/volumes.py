"""Volumes on the wire: what a version holds (entries), and the requests the
volumes service answers (ensure, delete, list, entries, commit).

A version of a volume is its manifest: one ``VolumeEntry`` per path. File
content lives in the blob store as chunks of ``thaw_core.volumes.CHUNK_SIZE``
bytes addressed by their sha256; an entry lists its chunks in order. A commit
carries only what changed against the version its sender loaded: entries
written (whole files) and paths deleted (with everything under them).
"""

from __future__ import annotations

from typing import Literal

from thaw_core.schema.base import Message, Spec

EntryKind = Literal["file", "dir"]
VolumeErrorCode = Literal["", "bad_request", "not_found", "conflict", "too_large", "internal"]


class VolumeEntry(Spec):
    """One path of a version: a file (its chunks, in order) or a directory."""

    # Relative to the volume's root, '/'-separated, never '..' or absolute.
    path: str
    kind: EntryKind = "file"
    size: int = 0
    mode: int = 0o644
    mtime: float = 0.0
    chunks: list[str] = []
    # The version that last wrote (or deleted) this path; set by the service.
    version: int = 0
    # A deletion kept so that a reload since an older version removes the path.
    deleted: bool = False


class VolumeInfo(Spec):
    name: str
    volume_id: str
    version: int
    size_bytes: int
    files: int
    max_bytes: int
    created_at: float
    updated_at: float


class VolumeEnsure(Message, tag="volume_ensure"):
    """Look a volume up by name; create it first when ``create_if_missing``."""

    name: str
    create_if_missing: bool = False
    # None: the service's default limit.
    max_bytes: int | None = None


class VolumeDelete(Message, tag="volume_delete"):
    name: str


class VolumeListAll(Message, tag="volume_list_all"):
    pass


class VolumeEntries(Message, tag="volume_entries"):
    """One page of the entries written since ``since_version`` (0: all), in
    path order after ``after``, under ``prefix`` ('' for the whole volume).
    With ``deletions`` (a reload), paths deleted since are included."""

    volume_id: str
    since_version: int = 0
    after: str = ""
    prefix: str = ""
    deletions: bool = False


class VolumeCommit(Message, tag="volume_commit"):
    """Changes against ``base_version``; ``commit_id`` makes a retried commit
    land once. A commit too large for one message is stored in the blob store
    first (``staged``, at ``contract.volume_commit_key(commit_id)``, as a
    ``VolumeChanges``) with ``changes`` and ``deleted`` left empty here."""

    volume_id: str
    commit_id: str
    base_version: int = 0
    changes: list[VolumeEntry] = []
    deleted: list[str] = []
    staged: bool = False


class VolumeChanges(Spec):
    """The body of a staged commit."""

    changes: list[VolumeEntry] = []
    deleted: list[str] = []


class VolumeReply(Message, tag="volume_reply"):
    """The answer to ``VolumeEnsure``, ``VolumeDelete`` and ``VolumeCommit``
    (``volume`` as it is after the request), or why it was refused."""

    volume: VolumeInfo | None = None
    error: str = ""
    code: VolumeErrorCode = ""


class VolumeListReply(Message, tag="volume_list_reply"):
    volumes: list[VolumeInfo] = []
    error: str = ""
    code: VolumeErrorCode = ""


class VolumeEntriesReply(Message, tag="volume_entries_reply"):
    """``version``: the volume's version when the page was read; ``more``: ask
    again with ``after`` set to the last entry's path."""

    version: int = 0
    entries: list[VolumeEntry] = []
    more: bool = False
    error: str = ""
    code: VolumeErrorCode = ""
