"""`App.lookup` finds a deployed app by name, for `Function.from_name`."""

from __future__ import annotations

from pathlib import Path

import pytest
import thaw as modal
from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"


def test_lookup_finds_a_deployed_app_whose_functions_are_called_by_name(
    use_platform: Platform,
) -> None:
    deployed = use_platform.cli("deploy", str(APPS / "async_entry.py"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    app = modal.App.lookup("async-entry")
    assert app.name == "async-entry" and (app.app_id or "").startswith("ap-")
    assert modal.Function.from_name(app.name, "double").remote(5) == 10


def test_lookup_of_a_missing_app(use_platform: Platform) -> None:
    with pytest.raises(modal.exception.NotFoundError, match="no-such-app"):
        modal.App.lookup("no-such-app")
    app = modal.App.lookup("no-such-app", create_if_missing=True)
    assert app.name == "no-such-app" and app.app_id is None
