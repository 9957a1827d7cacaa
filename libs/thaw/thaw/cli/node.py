"""`thaw node list`: the fleet as the scheduler sees it."""

from __future__ import annotations

import click
from thaw_core.api import NodeInfo

from thaw.cli._common import ago, expected_errors
from thaw.cli._listing import Column, json_option, print_list, styled
from thaw.cli.node_credentials import credentials_group

_STATE_STYLE = {"ready": "green", "dead": "red"}


def _gpus(n: NodeInfo) -> str:
    if not n.gpus:
        return "-"
    free = sum(1 for g in n.gpus if not g.container_id and not g.mig)
    models = sorted({g.name for g in n.gpus})
    return f"{free}/{len(n.gpus)} {', '.join(models)}"


NODE_COLUMNS: list[Column[NodeInfo]] = [
    Column("node", lambda n: n.node_id, whole=True),
    Column("state", lambda n: styled(n.state, _STATE_STYLE)),
    Column("cpus free/total", lambda n: f"{n.free_cores:g}/{n.cores}"),
    Column("memory free/total", lambda n: f"{n.free_memory_mb}/{n.memory_mb} MiB"),
    Column("gpus free/total", _gpus),
    Column("containers", lambda n: str(n.containers)),
    Column("fingerprint", lambda n: n.fingerprint_id or "-"),
    Column("seen", lambda n: ago(n.last_seen)),
]


@click.group("node")
def node_group() -> None:
    """The machines containers run on."""


@node_group.command("list")
@json_option
@expected_errors
def list_nodes(as_json: bool) -> None:
    """List nodes: state, CPUs, memory and GPUs free of total, containers, fingerprint class."""
    from thaw._sync import background_loop
    from thaw.client import current

    nodes = background_loop().run(current().nodes())
    print_list(nodes, NODE_COLUMNS, as_json=as_json, empty="no nodes")


node_group.add_command(credentials_group)

COMMANDS = [node_group]
