"""Functions whose containers try connections: with network (a cold start)
and with a memory snapshot (no network: thaw_agent.container_network)."""

import socket

import thaw as modal

app = modal.App("net-probe")


def _probe(targets: list[tuple[str, int]]) -> dict[str, str]:
    """Each target: what a connection got (its first line), or the error's name."""
    got = {}
    for host, port in targets:
        try:
            with socket.create_connection((host, port), timeout=5) as c:
                got[f"{host}:{port}"] = "reached " + c.makefile().readline().strip()
        except OSError as e:
            got[f"{host}:{port}"] = type(e).__name__
    return got


@app.function()
def probe(targets: list[tuple[str, int]]) -> dict[str, str]:
    return _probe(targets)


@app.function(enable_memory_snapshot=True)
def probe_snapshotted(targets: list[tuple[str, int]]) -> dict[str, str]:
    return _probe(targets)
