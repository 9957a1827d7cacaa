"""Dockerfile images end to end: a multi-stage Dockerfile (ARG before and
after FROM, ENV, WORKDIR, COPY --from and from the context, USER, RUN) on
the test registry's image builds, a function on it sees what each did (and
runs as the USER), and changing the last RUN rebuilds that layer only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import thaw as modal
from fixtures.images import BUILD_TIMEOUT_S, step_statuses
from fixtures.platform import Platform
from fixtures.wait import eventually

APPS = Path(__file__).parent / "apps"

pytestmark = [pytest.mark.usefixtures("use_platform"), pytest.mark.slow]

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS build
ARG GREETING=hello
RUN echo "$GREETING from the build stage" > /built.txt

FROM ${BASE}
ARG MODE=test
ENV APP_MODE=${MODE}
WORKDIR /app
COPY --from=build /built.txt ./built.txt
COPY data.txt /app/
RUN useradd --uid 1234 --create-home appuser && usermod -aG audio appuser
USER appuser
RUN id -u > /home/appuser/uid \\
    && echo {marker} > /home/appuser/marker
LABEL org.example.test=yes
CMD ["python3"]
"""


@pytest.fixture(scope="module")
async def volumes_running(platform: Platform) -> None:
    """The function mounts a volume (written as its USER): the shared
    platform starts without the volumes service."""
    platform.ensure_service("volumes")

    async def answers() -> bool:
        status, _ = await asyncio.to_thread(platform.request, "/v1/volumes")
        return status == 200

    await eventually(answers, 60, "the volumes service to answer", every_s=0.2)


def deploy(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, context: Path, base: str, marker: str
) -> tuple[int, str]:
    (context / "Dockerfile").write_text(DOCKERFILE.replace("{marker}", marker))
    monkeypatch.setenv("IMG_DOCKERFILE", str(context / "Dockerfile"))
    monkeypatch.setenv("IMG_BASE", base)
    monkeypatch.setenv("IMG_APP", "img-dockerfile")
    out = platform.cli("deploy", str(APPS / "img_dockerfile.py"), timeout=BUILD_TIMEOUT_S)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.usefixtures("volumes_running")
def test_a_multi_stage_dockerfile_builds_and_one_changed_run_rebuilds_only_itself(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, base_image: str, tmp_path: Path
) -> None:
    (tmp_path / "data.txt").write_text("from the context\n")
    code, said = deploy(platform, monkeypatch, tmp_path, base_image, "first")
    assert code == 0, said + platform.logs()
    assert "[4/15] RUN echo" in said, said
    got = modal.Function.from_name("img-dockerfile", "inspect").remote()
    assert got["APP_MODE"] == "test" and got["cwd"] == "/app", got
    assert got["built"] == "hi from the build stage\n", got
    assert got["data"] == "from the context\n"
    assert got["uid_at_build"] == "1234" and got["marker"] == "first"
    # The function runs as the Dockerfile's USER, with that user's home.
    assert (got["uid"], got["HOME"]) == ("1234", "/home/appuser"), got
    assert got["groups"] == "29", got  # audio, from the image's /etc/group
    assert got["note_owner"] == "1234", got

    code, again = deploy(platform, monkeypatch, tmp_path, base_image, "second")
    assert code == 0, again + platform.logs()
    statuses = step_statuses(again)
    # Every layer up to the changed RUN is reused; only that RUN is built.
    assert statuses["13"] == "built", again
    assert [n for n, s in statuses.items() if s == "built"] == ["13"], again
    assert "1 built, 7 cached" in again, again
    again_got = modal.Function.from_name("img-dockerfile", "inspect").remote()
    assert again_got["marker"] == "second", again_got
    # A new container: the volume's committed file is the USER's again, and writable.
    assert (again_got["uid"], again_got["note_owner"]) == ("1234", "1234"), again_got
