"""The web dashboard in headless Chromium (Debian's ``chromium``, driven by
Playwright) against the real platform: a wrong token is refused, the right
one signs in; an app is deployed and called, and its calls (a failure with
its traceback) and log lines appear on the page. Screenshots of the main
pages are saved in the test's tmp dir."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import thaw as modal
from fixtures.platform import Platform

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

APPS = Path(__file__).parent / "apps"
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 60_000
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("use_platform")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run make setup")
    profile = tmp_path / "profile"
    profile.mkdir()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )  # fmt: skip
        context.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        try:
            yield context
        finally:
            context.close()


def deploy(platform: Platform) -> None:
    deployed = platform.cli("deploy", str(APPS / "dashboard_app.py"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr


def platform_serves_volumes(platform: Platform) -> bool:
    request = urllib.request.Request(
        platform.gateway_url + "/v1/volumes", headers={"Authorization": f"Bearer {platform.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            return True
    except urllib.error.HTTPError:
        return False


VOLUME = "dashboard-files"


def browsable_volume(platform: Platform, tmp_path: Path) -> None:
    """A volume with a file in a directory, served (the volumes service runs)."""
    platform.ensure_service("volumes")
    local = tmp_path / "readme.txt"
    local.write_text("read me in the browser\n")
    vol = modal.Volume.from_name(VOLUME, create_if_missing=True)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(local, "docs/readme.txt")


def sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#signin button[type=submit]")


def test_sign_in_deploy_call_and_watch(
    platform: Platform, browser: BrowserContext, tmp_path: Path
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browsable_volume(platform, tmp_path)

    page.goto(platform.gateway_url + "/")
    expect(page.locator("#signin")).to_be_visible()
    sign_in(page, "thaw_not-a-token-anyone-issued")
    expect(page.locator("#signin-error")).to_contain_text("Token refused")
    expect(page.locator("#shell")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    page.screenshot(path=shots / "signin-refused.png")

    # A read token is all the dashboard needs: it only lists and reads.
    made = platform.cli("token", "create", "dashboard-viewer", "--scope", "read")
    assert made.returncode == 0, made.stdout + made.stderr
    viewer = next(w for w in made.stdout.split() if w.startswith("thaw_"))
    sign_in(page, viewer)
    expect(page.locator("#shell")).to_be_visible()
    deploy(platform)
    expect(page.locator("#apps")).to_contain_text("dashboard")
    page.screenshot(path=shots / "apps.png")

    greeted = modal.Function.from_name("dashboard", "greet").spawn("browser")
    assert greeted.get(timeout=120) == "hello browser"
    broken = modal.Function.from_name("dashboard", "broken").spawn()
    with pytest.raises(ValueError):
        broken.get(timeout=120)

    page.click("#apps a:text-is('dashboard')")
    expect(page.locator("#functions-table")).to_contain_text("greet")
    expect(page.locator("#functions-table")).to_contain_text("0.125 CPU, 128 MiB")
    done = page.locator(f"tr[data-call='{greeted.object_id}']")
    expect(done).to_contain_text("success")
    failed = page.locator(f"tr[data-call='{broken.object_id}']")
    expect(failed).to_contain_text("failure")
    error = page.locator("details.error", has_text="the dashboard shows this traceback")
    error.locator("summary").click()
    expect(error.locator("pre.traceback")).to_contain_text("raise ValueError")
    expect(page.locator("#logs")).to_contain_text("dashboard says hello to browser")
    expect(page.locator("#app-containers")).to_contain_text("cold start")
    expect(page.locator("#plot-calls-per-minute rect").first).to_be_attached()
    expect(page.locator("#plot-latency rect").first).to_be_attached()
    # Its deploys (GET /v1/apps/{app}/versions), the one it runs marked.
    expect(page.locator("#app-versions")).to_contain_text("current")
    page.screenshot(path=shots / "app.png", full_page=True)

    for name in ("calls", "containers", "nodes", "snapshots", "volumes", "secrets"):
        page.click(f"nav a[href='#/{name}']")
        if name == "volumes" and not platform_serves_volumes(platform):
            # The page says what the API answered.
            expect(page.locator("#banner")).to_contain_text("volumes service")
        else:
            expect(page.locator(f"#{name}")).not_to_be_empty()
            expect(page.locator("#banner")).to_be_hidden()
        if name == "volumes":
            # Browse into the volume: its directory, then the file in it.
            page.click(f"#volumes a:text-is('{VOLUME}')")
            expect(page.locator("#entries")).to_contain_text("docs/")
            page.click("#entries a:text-is('docs/')")
            expect(page.locator("#entries")).to_contain_text("docs/readme.txt")
            page.screenshot(path=shots / "volume.png", full_page=True)
        if name == "nodes":
            expect(page.locator("#nodes")).to_contain_text("agent-a")
            expect(page.locator("#nodes")).to_contain_text("fingerprint class")
        if name == "containers":
            expect(page.locator("#plot-containers")).to_be_attached()
            expect(page.locator("#plot-cold-restores")).to_be_attached()
        page.screenshot(path=shots / f"{name}.png", full_page=True)

    # Signing out forgets the token: the page asks for one again.
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert not errors, errors
    print(f"screenshots in {shots}")
    the_cli_lists_the_same_calls(platform, greeted.object_id, broken.object_id)


def the_cli_lists_the_same_calls(platform: Platform, ok: str, failed: str) -> None:
    listed = platform.cli("call", "list", "--app", "dashboard")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["call", "app", "function", "status"]
    fields = {row.split()[0]: row.split() for row in rows}
    assert fields[failed][2:4] == ["broken", "failure"], rows
    assert fields[ok][2:4] == ["greet", "success"], rows
    assert rows.index(next(r for r in rows if r.startswith(failed))) < rows.index(
        next(r for r in rows if r.startswith(ok))
    ), "newest first"
    as_json = json.loads(
        platform.cli("call", "list", "-a", "dashboard", "-f", "broken", "--json").stdout
    )
    assert [c["call_id"] for c in as_json] == [failed]
    assert "raise ValueError" in as_json[0]["traceback"]
    shown = platform.cli("app", "show", "dashboard")
    assert shown.returncode == 0, shown.stderr
    assert "recent calls" in shown.stdout and ok in shown.stdout and failed in shown.stdout
