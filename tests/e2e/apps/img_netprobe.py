"""An app whose image build tries to reach the platform: a ``run_commands``
step connects to each ``host:port`` of ``IMG_PROBE_TARGETS`` (space
separated) and records what happened in /probe.json, and a ``pip_install``
step installs a package that only the package index has."""

import os
import shlex

import thaw as modal

TARGETS = os.environ.get("IMG_PROBE_TARGETS", "127.0.0.1:1")
PROBE = (
    "import json, socket, sys\n"
    "out = {}\n"
    "for t in sys.argv[1:]:\n"
    "    host, port = t.rsplit(':', 1)\n"
    "    try:\n"
    "        socket.create_connection((host, int(port)), timeout=5).close()\n"
    "        out[t] = 'connected'\n"
    "    except OSError as e:\n"
    "        out[t] = repr(e)\n"
    "json.dump(out, open('/probe.json', 'w'))\n"
)

image = (
    modal.Image.debian_slim()
    .run_commands(f"python3 -c {shlex.quote(PROBE)} {TARGETS}")
    .pip_install("pyjokes")
)
app = modal.App("img-netprobe", image=image)


@app.function()
def probe() -> dict[str, str]:
    import json

    import pyjokes

    with open("/probe.json") as f:
        return {"pyjokes": pyjokes.__file__, **json.load(f)}
