"""A container's cold start imports the SDK (the user's ``import thaw as
modal``, and the runtime itself): it must not load the platform's client
libraries, which it never uses there. With them, a trivial function's cold
start spent about 0.8 s importing nats, aiohttp, minio and pycryptodome."""

from __future__ import annotations

import json
import subprocess
import sys

# Loaded lazily by what needs them (the bus, the S3 backend, the volumes
# service's client, telemetry's exporter), never by ``import thaw``.
CLIENT_ONLY = {"nats", "aiohttp", "minio", "Crypto", "urllib3", "opentelemetry"}


def test_importing_the_sdk_and_the_runtime_loads_no_client_library() -> None:
    probe = (
        "import json, sys, thaw, thaw.runtime.main;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not loaded & CLIENT_ONLY, sorted(loaded & CLIENT_ONLY)


def test_what_was_made_lazy_is_still_there_when_asked_for() -> None:
    from thaw_core.blob import S3BlobStore
    from thaw_core.volumes import VolumeError, VolumesClient

    assert S3BlobStore.__name__ == "S3BlobStore"
    assert issubclass(VolumeError, Exception) and VolumesClient.__name__ == "VolumesClient"
