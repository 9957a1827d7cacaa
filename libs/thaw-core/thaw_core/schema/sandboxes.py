"""``thaw.Sandbox`` and ``thaw container exec`` on the wire.

A sandbox is a container the agent runs like a function's, whose main
process is the user's command rather than thaw's runtime. The gateway asks
the scheduler to place it (``contract.SANDBOX_PLACE``: ``PlaceSandbox`` ->
``SandboxPlaced``); the scheduler sends the chosen agent ``StartSandbox``.

Every process in a container (a sandbox's main process, ``"main"``, and each
``exec``) is reached on ``contract.CONTAINER_EXEC`` (``thaw.exec.<node>.<container
id>``), served by the agent that runs the container: one ``ExecOp`` per
request, answered by one ``ExecReply``. Output is read by offset (``ExecRead``
long-polls), input written by offset (``ExecWrite``), so a request asked
again after a lost reply neither loses nor repeats a byte. Only the gateway
publishes there (``thaw_core.permissions``): it checks that the caller's
token may touch the container's app first.
"""

from __future__ import annotations

from typing import Literal

from thaw_core.schema.base import Message, Spec
from thaw_core.schema.functions import Resources, SecretRef
from thaw_core.schema.images import ImageRef
from thaw_core.schema.secret_grants import SecretsGrant

# The id of a sandbox's main process (its command).
MAIN_PROCESS = "main"
ExecStream = Literal["stdout", "stderr"]
ExecErrorCode = Literal["", "bad_request", "not_found", "conflict"]
# How a sandbox ended: "" while it runs, "exited" (its command did), "timeout"
# (its timeout or idle timeout), "terminated" (asked to), "failed" (at start).
SandboxEnd = Literal["", "exited", "timeout", "terminated", "failed"]


class SandboxSpec(Spec):
    """What a sandbox runs and with which limits. ``command`` empty: it
    sleeps until terminated or timed out (exec runs the work). The body of
    ``POST /v1/sandboxes`` too, where the gateway gives it its id."""

    app: str
    sandbox_id: str = ""
    command: list[str] = []
    resources: Resources = Resources()
    # Seconds from its start until it is killed.
    timeout_s: float = 300.0
    # Killed after this long without an exec request or input; None: never.
    idle_timeout_s: float | None = None
    workdir: str = "/"
    env: dict[str, str] = {}
    secrets: list[SecretRef] = []
    block_network: bool = False
    tags: dict[str, str] = {}
    created_at: float = 0.0
    # None: the node's base rootfs. Built by the gateway before placing it,
    # which fills in its image_id, as at deploy.
    image: ImageRef | None = None


class StartSandbox(Message, tag="start_sandbox"):
    """To one agent (``contract.AGENT_COMMAND``): answered once runc started it."""

    spec: SandboxSpec
    # Leave to fetch ``spec.secrets`` for it on this node, signed by the scheduler.
    secrets_grant: SecretsGrant | None = None


class PlaceSandbox(Message, tag="place_sandbox"):
    """Gateway -> scheduler: choose a node for it and start it there."""

    spec: SandboxSpec


class SandboxPlaced(Message, tag="sandbox_placed"):
    node_id: str = ""
    error: str = ""
    # The fleet has no room for it now (as opposed to a refused spec or agent).
    no_room: bool = False


# ---------------------------------------------------------------- processes


class ExecStart(Message, tag="exec_start"):
    """Run ``argv`` in the container (``runc exec``), as its main process's user."""

    argv: list[str]
    workdir: str = ""
    env: dict[str, str] = {}
    # Killed after this long; None: runs as long as the container does.
    timeout_s: float | None = None
    tty: bool = False


class ExecRead(Message, tag="exec_read"):
    """Output of ``stream`` from byte ``offset``; waits up to ``wait_s`` for some."""

    process_id: str
    stream: ExecStream = "stdout"
    offset: int = 0
    wait_s: float = 0.0
    max_bytes: int = 256 * 1024


class ExecWrite(Message, tag="exec_write"):
    """``data`` is the process's input from byte ``offset`` on; what was
    written already is skipped. ``eof`` closes its stdin after it."""

    process_id: str
    offset: int = 0
    data: bytes = b""
    eof: bool = False


class ExecWait(Message, tag="exec_wait"):
    """The process's exit code, waiting up to ``wait_s`` for it."""

    process_id: str
    wait_s: float = 0.0


class SandboxTerminate(Message, tag="sandbox_terminate"):
    """Kill the sandbox (or, with a process id, only that exec'd process)."""

    process_id: str = ""


class SandboxDescribe(Message, tag="sandbox_describe"):
    pass


class SandboxSetTags(Message, tag="sandbox_set_tags"):
    tags: dict[str, str]


ExecOp = (
    ExecStart | ExecRead | ExecWrite | ExecWait | SandboxTerminate | SandboxDescribe | SandboxSetTags
)
EXEC_OPS: tuple[type[Message], ...] = (
    ExecStart, ExecRead, ExecWrite, ExecWait, SandboxTerminate, SandboxDescribe, SandboxSetTags,
)  # fmt: skip


class ExecStarted(Message, tag="exec_started"):
    process_id: str


class ExecOutput(Message, tag="exec_output"):
    data: bytes
    # Where the next read starts.
    offset: int
    # The stream is closed and everything was read.
    eof: bool = False


class ExecAck(Message, tag="exec_ack"):
    # Bytes of input taken so far.
    offset: int


class ExecStatus(Message, tag="exec_status"):
    # None: still running.
    returncode: int | None = None


class SandboxState(Message, tag="sandbox_state"):
    """What a container is: a sandbox's tags and exit code; a function
    container's app (``sandbox`` False)."""

    container_id: str
    app: str
    node_id: str
    sandbox: bool = True
    tags: dict[str, str] = {}
    returncode: int | None = None
    created_at: float = 0.0
    ended_by: SandboxEnd = ""
    # Why, in words ("timed out after 5s").
    end_reason: str = ""


class ExecError(Message, tag="exec_error"):
    error: str
    code: ExecErrorCode = ""


ExecReply = ExecStarted | ExecOutput | ExecAck | ExecStatus | SandboxState | ExecError
EXEC_REPLIES: tuple[type[Message], ...] = (
    ExecStarted, ExecOutput, ExecAck, ExecStatus, SandboxState, ExecError,
)  # fmt: skip


class SandboxCreated(Spec):
    sandbox_id: str
    node_id: str


class SandboxList(Spec):
    """``GET /v1/sandboxes``: the running sandboxes."""

    sandboxes: list[SandboxState]
