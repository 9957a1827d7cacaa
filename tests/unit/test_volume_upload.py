"""An upload of many files (thaw._volume_http.upload) through a gateway that
drops a connection and answers busy now and then: every chunk still lands
once, the commit names every file, and each step is reported as it goes."""

from __future__ import annotations

from pathlib import Path

import msgspec
from thaw import _volume_http as http
from thaw._sync import background_loop
from thaw.client import use_transport
from thaw.exception import ConnectionError
from thaw_core.schema import VolumeInfo
from thaw_core.volumes.api import ChunksMissing, VolumeCommitBody

INFO = VolumeInfo(
    name="v", volume_id="vo-1", version=1, size_bytes=0, files=0, max_bytes=1 << 30,
    created_at=0.0, updated_at=0.0,
)  # fmt: skip


class BusyGateway:
    """Every third chunk PUT first answers 503 (the gateway busy), then is
    refused (a connection lost), then is stored."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.tries: dict[str, int] = {}
        self.committed: VolumeCommitBody | None = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        assert body is not None
        if path == "/v1/volume-chunks:missing":
            asked = msgspec.json.decode(body, type=ChunksMissing).digests
            lacking = [d for d in asked if d not in self.stored]
            return 200, msgspec.json.encode(ChunksMissing(digests=lacking))
        if method == "PUT":
            digest = path.rsplit("/", 1)[1]
            tries = self.tries[digest] = self.tries.get(digest, 0) + 1
            if len(self.tries) % 3 == 0 and tries == 1:
                return 503, b'{"error": {"code": "unavailable", "message": "busy"}}'
            if len(self.tries) % 3 == 0 and tries == 2:
                raise ConnectionError("cannot reach the thaw gateway (connection reset)")
            self.stored[digest] = body
            return 201, b"{}"
        assert path == "/v1/volumes/v/commit"
        self.committed = msgspec.json.decode(body, type=VolumeCommitBody)
        return 200, msgspec.json.encode(INFO)

    async def close(self) -> None:
        pass


def test_a_busy_or_lost_gateway_costs_a_chunk_a_retry_not_the_upload(tmp_path: Path) -> None:
    files = []
    for i in range(30):
        (tmp_path / f"f{i}").write_text(f"file {i}\n" * i)
        files.append(http.Upload(tmp_path / f"f{i}", f"dir/f{i}"))
    gateway = BusyGateway()
    phases: list[str] = []
    moved: list[int] = []
    with use_transport(gateway):  # type: ignore[arg-type]
        info = background_loop().run(
            http.upload("v", files, force=False, on_bytes=moved.append, on_phase=phases.append)
        )
    assert info.version == 1
    assert gateway.committed is not None
    assert sorted(e.path for e in gateway.committed.changes) == sorted(f.remote for f in files)
    assert set(gateway.stored) == {d for e in gateway.committed.changes for d in e.chunks}
    assert max(gateway.tries.values()) == 3  # each retried chunk was sent again until stored
    assert sum(moved) == sum((tmp_path / f"f{i}").stat().st_size for i in range(30))
    assert phases[0] == "hashing 1/30 files" and "hashing 30/30 files" in phases
    assert f"sending {len(gateway.stored)}/{len(gateway.stored)} chunks" in phases
    assert phases[-1] == "committing 30 files"
