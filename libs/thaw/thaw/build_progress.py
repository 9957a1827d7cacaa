"""Image builds as a deploy shows them: one line per step as it is cached,
built or fails, the build's output under it, and a spinner on the step being
built when stdout is a terminal (plain lines otherwise, for CI logs).

Fed with the deploy stream's events (``thaw_core.api.DeployEvent``); a build
id of "" is an image that was built before (the gateway's lookup found it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from thaw_core.api import ImageBuildStarted
from thaw_core.schema import BuildOutput, BuildProgress, BuildResult

from thaw._live_lines import LiveLines

_STYLE = {
    "cached": "dim",
    "applied": "dim",
    "waiting": "yellow",
    "building": "cyan",
    "built": "green",
    "failed": "bold red",
}


@dataclass
class _Build:
    functions: list[str]
    steps: list[str]


class BuildDisplay:
    def __init__(self, *, live: bool | None = None) -> None:
        self.lines = LiveLines(live=live)
        self.live = self.lines.live
        self._builds: dict[str, _Build] = {}
        self._spin = self.lines.spin
        self._print = self.lines.print

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._spin(None)

    def show(self, event: Any) -> None:
        match event:
            case ImageBuildStarted(build_id=build_id, functions=functions, steps=steps):
                self._builds[build_id] = _Build(functions, steps)
                if build_id:
                    self._print(
                        f"building the image of {', '.join(functions)} ({len(steps)} steps)",
                        "bold",
                    )
            case BuildProgress():
                self._progress(event)
            case BuildOutput(lines=lines, stream=stream):
                for line in lines:
                    self._print(f"      {line}", "red" if stream == "stderr" else "dim")
            case BuildResult():
                self._result(event)

    def _label(self, build_id: str, step: int) -> str:
        build = self._builds.get(build_id)
        if build is None or not 0 <= step < len(build.steps):
            return f"step {step}"
        return f"[{step + 1}/{len(build.steps)}] {build.steps[step]}"

    def _progress(self, p: BuildProgress) -> None:
        label = self._label(p.build_id, p.step)
        if p.status == "building" and self.live:
            self._spin(f"{label} building…")
            return
        if p.status in ("built", "failed", "cached", "applied"):
            self._spin(None)
        took = f" in {p.elapsed_s:.1f}s" if p.status == "built" else ""
        self._print(f"  {label}: {p.status}{took}", _STYLE.get(p.status, ""))

    def _result(self, r: BuildResult) -> None:
        self._spin(None)
        build = self._builds.get(r.build_id)
        who = ", ".join(build.functions) if build else "the app"
        if not r.ok:
            self._print(f"✗ the image of {who} failed to build", "bold red")
            return
        if not r.build_id:
            self._print(
                f"✓ image {r.image_id[:12]} of {who}: already built, {r.cached_steps} steps cached",
                "green",
            )
            return
        self._print(
            f"✓ image {r.image_id[:12]} of {who}: {r.built_steps} built, "
            f"{r.cached_steps} cached ({r.elapsed_s:.1f}s)",
            "green",
        )
