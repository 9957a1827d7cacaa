"""Scoped tokens as users hand them out: a service that only calls one app's
functions gets an invoke token for that app, and the SDK does all it needs
with it (from_name, remote, map, spawn); anything else (another app, a
deploy, the token list) is refused with thaw's AuthError naming the scope.
A deploy token deploys and runs (`thaw run`), a read token lists."""

from __future__ import annotations

import uuid

import pytest
import thaw as modal
from fixtures.platform import E2E_APPS, Platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def behaviours(platform: Platform) -> None:
    platform.deploy("behaviours.py")


def make_token(p: Platform, scope: str, *apps: str) -> str:
    args = [a for app in apps for a in ("--app", app)]
    out = p.cli("token", "create", f"e2e-{scope}-{uuid.uuid4().hex[:6]}", "--scope", scope, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return next(w for w in out.stdout.split() if w.startswith("thaw_"))


def test_an_invoke_token_calls_its_app_and_nothing_else(
    platform: Platform, behaviours: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_token(platform, "invoke", "behaviours")
    monkeypatch.setenv("THAW_GATEWAY_URL", platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", token)
    square = modal.Function.from_name("behaviours", "square")
    assert square.remote(7) == 49
    assert list(square.map(range(5))) == [0, 1, 4, 9, 16]
    assert square.spawn(3).get(timeout=120) == 9

    with pytest.raises(modal.exception.AuthError, match="may invoke only the apps"):
        modal.Function.from_name("classes", "anything").remote()
    out = platform.cli("app", "list", env={"THAW_TOKEN": token})
    assert out.returncode != 0 and "scope 'read'" in out.stderr + out.stdout
    out = platform.cli("token", "list", env={"THAW_TOKEN": token})
    assert out.returncode != 0 and "scope 'admin'" in out.stderr + out.stdout


def test_a_deploy_token_runs_and_a_read_token_lists(platform: Platform) -> None:
    deployer = make_token(platform, "deploy")
    out = platform.cli("run", f"{E2E_APPS / 'core_pattern.py'}::main", env={"THAW_TOKEN": deployer})
    assert out.returncode == 0, out.stdout + out.stderr
    reader = make_token(platform, "read")
    out = platform.cli("app", "list", env={"THAW_TOKEN": reader})
    assert out.returncode == 0, out.stdout + out.stderr
    out = platform.cli("deploy", str(E2E_APPS / "behaviours.py"), env={"THAW_TOKEN": reader})
    assert out.returncode != 0 and "scope 'deploy'" in out.stdout + out.stderr
