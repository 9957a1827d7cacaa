"""What a container says to whoever runs inputs on it, and how its start fails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from thaw_core.container_protocol import InitFailed, Output, WebFrame

if TYPE_CHECKING:
    from thaw_agent.container import Container


class ContainerStartError(Exception):
    """The container could not be started; the message says why."""


class ContainerEvents(Protocol):
    """What the dispatcher hears from containers (called on the event loop)."""

    def container_ready(self, container: Container) -> None: ...
    def container_init_failed(self, container: Container, failure: InitFailed) -> None: ...
    def container_output(self, container: Container, output: Output) -> None: ...
    def container_gone(self, container: Container) -> None: ...
    def container_web(self, container: Container, frame: WebFrame) -> None: ...
