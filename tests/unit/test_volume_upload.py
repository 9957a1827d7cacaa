"""An upload of many files (thaw._volume_http.upload) through a gateway that
drops a connection and answers busy now and then: every chunk and pack still
lands, the commit names every file with its content, and each step is
reported as it goes."""

from __future__ import annotations

from pathlib import Path

import msgspec
from thaw import _volume_http as http
from thaw._sync import background_loop
from thaw.client import use_transport
from thaw.exception import ConnectionError
from thaw_core.schema import VolumeInfo
from thaw_core.volumes.api import ChunksMissing, VolumeCommitBody
from thaw_core.volumes.chunks import PACK_BELOW
from thaw_core.volumes.refs import parse_ref

INFO = VolumeInfo(
    name="v", volume_id="vo-1", version=1, size_bytes=0, files=0, max_bytes=1 << 30,
    created_at=0.0, updated_at=0.0,
)  # fmt: skip


class BusyGateway:
    """Every other chunk or pack (the first, the pack, among them) is first
    answered 503 (the gateway busy), then refused (a connection lost), then
    stored."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.tries: dict[str, int] = {}
        self.committed: VolumeCommitBody | None = None
        self.flaky: set[str] = set()

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        assert body is not None
        if path == "/v1/volume-chunks:missing":
            asked = msgspec.json.decode(body, type=ChunksMissing).digests
            lacking = [d for d in asked if d not in self.stored]
            return 200, msgspec.json.encode(ChunksMissing(digests=lacking))
        if method == "PUT":
            assert path.startswith(("/v1/volume-chunks/", "/v1/volume-packs/")), path
            digest = path.rsplit("/", 1)[1]
            if digest not in self.tries and len(self.tries) % 2 == 0:
                self.flaky.add(digest)
            tries = self.tries[digest] = self.tries.get(digest, 0) + 1
            if digest in self.flaky and tries == 1:
                return 503, b'{"error": {"code": "unavailable", "message": "busy"}}'
            if digest in self.flaky and tries == 2:
                raise ConnectionError("cannot reach the thaw gateway (connection reset)")
            self.stored[digest] = body
            return 201, b"{}"
        assert path == "/v1/volumes/v/commit"
        self.committed = msgspec.json.decode(body, type=VolumeCommitBody)
        return 200, msgspec.json.encode(INFO)

    async def close(self) -> None:
        pass


def content(gateway: BusyGateway, chunks: list[str]) -> bytes:
    """A committed file's bytes, from what the gateway stored."""
    pieces = []
    for c in chunks:
        ref = parse_ref(c)
        if ref.pack:
            pieces.append(gateway.stored[ref.pack][ref.offset : ref.offset + ref.length])
        else:
            pieces.append(gateway.stored[ref.digest])
    return b"".join(pieces)


def test_a_busy_or_lost_gateway_costs_a_chunk_a_retry_not_the_upload(tmp_path: Path) -> None:
    files = []
    for i in range(30):
        # Small files go in a pack; every tenth is large enough for chunks of its own.
        size = PACK_BELOW + i if i % 10 == 9 else 8 * i
        (tmp_path / f"f{i}").write_bytes(bytes([i]) * size)
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
    committed = {e.path: e for e in gateway.committed.changes}
    assert sorted(committed) == sorted(f.remote for f in files)
    for f in files:
        assert content(gateway, committed[f.remote].chunks) == f.local.read_bytes()
    assert sum(parse_ref(c).pack != "" for e in committed.values() for c in e.chunks) == 26
    # Each flaky blob was sent again until stored; the others once.
    assert len(gateway.flaky) == 2 and all(gateway.tries[d] == 3 for d in gateway.flaky)
    assert all(n == 1 for d, n in gateway.tries.items() if d not in gateway.flaky)
    assert sum(moved) == sum(f.local.stat().st_size for f in files)
    assert "sending 27/27 small files" in phases  # f0 is empty: in no pack, still committed
    assert phases.index("hashing 1/3 large files") > phases.index("sending 27/27 small files")
    chunks = len(gateway.stored) - 1  # all but the pack
    assert f"sending {chunks}/{chunks} chunks" in phases
    assert phases[-1] == "committing 30 files"
