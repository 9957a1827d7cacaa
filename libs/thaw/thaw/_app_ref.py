"""What a Function or Cls, and deploying, ask of the App that made them.

``thaw.app`` imports ``thaw.functions``, ``thaw.cls`` and ``thaw.deploy``;
those ask for an app through these protocols, so none imports ``thaw.app``.
"""

from __future__ import annotations

from typing import Protocol

from thaw_core.schema import FunctionSpec


class AppRef(Protocol):
    """An app its functions' calls go to: by the name it runs under."""

    @property
    def running_name(self) -> str: ...


class DeployableApp(AppRef, Protocol):
    """An app to bundle and deploy: its name, its specs, and the name an
    ephemeral run holds it under (None when none does)."""

    _running_as: str | None

    @property
    def name(self) -> str | None: ...

    def specs(self) -> list[FunctionSpec]: ...


class AppBound:
    """Belongs to an app: the App that made it here, or a deployed app it was
    looked up in by name."""

    def __init__(self, app: AppRef | None, app_name: str | None) -> None:
        self.app = app
        self._app_name = app_name

    @property
    def app_name(self) -> str:
        if self.app is not None:
            return self.app.running_name
        assert self._app_name is not None
        return self._app_name
