"""What each kind of build step runs in its build container.

Every step that may run pip or uv (``pip_install`` and its kin,
``run_commands``, a Dockerfile's ``RUN``) sees the machine's pip settings and CA bundle
(``PipSettings.container``) and pip's and uv's caches on the builder's shared
cache dir, so that neither the settings nor downloads land in its layer.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from thaw_core.schema import (
    AptInstall,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    UvPipInstall,
)

from thaw_builder.pipconf import Mount, PipSettings
from thaw_builder.plan import PlannedStep
from thaw_builder.runner import BASE_ENV, BUILD_DIR_IN_CONTAINER, Command

PIP_CACHE_IN_CONTAINER = f"{BUILD_DIR_IN_CONTAINER}/pip-cache"
REQUIREMENTS_IN_CONTAINER = f"{BUILD_DIR_IN_CONTAINER}/requirements.txt"

# Runs each command in its own shell, echoing it first, and stops at the first
# that fails with that command's exit code.
_RUN_EACH = 'for c in "$@"; do printf "+ %s\\n" "$c"; {shell} "$c" || exit $?; done'
_APT = (
    'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"'
    " && apt-get clean && rm -rf /var/lib/apt/lists/*"
)


def command_for(
    planned: PlannedStep,
    *,
    pip: PipSettings,
    pip_cache: Path,
    scratch: Path,
    timeout_s: float,
) -> Command:
    """The command of a ``run`` step. ``scratch`` is a host dir of this build
    for files the step needs (a requirements file)."""
    ro: list[Mount] = []
    if planned.docker is not None:  # a Dockerfile's RUN: its argv, env and USER
        tools = tool_env(pip, pip_cache)
        return Command(
            argv=planned.docker.argv,
            env={**BASE_ENV, **tools.env, **planned.docker.env},
            cwd=planned.workdir,
            ro_mounts=tools.ro,
            rw_mounts=tools.rw,
            timeout_s=timeout_s,
            user=planned.docker.user,
        )
    match planned.step:
        case RunCommands(commands=commands):
            tools = tool_env(pip, pip_cache)
            argv = run_each_argv("run_commands", commands)
        case AptInstall(packages=packages):
            tools = ToolEnv()
            argv = ["/bin/sh", "-c", _APT, "apt_install", *packages]
        case PipInstall() | UvPipInstall() | PipInstallFromRequirements() as step:
            # uv is not in the base image; pip installs the same packages.
            settings = pip.with_step(
                index_url=step.index_url,
                extra_index_url=step.extra_index_url,
                find_links=step.find_links,
                pre=step.pre,
            )
            tools = tool_env(settings, pip_cache)
            argv = ["python3", "-m", "pip", "install"]
            if isinstance(step, PipInstallFromRequirements):
                assert step.requirements is not None  # checked by the plan
                req = scratch / "requirements.txt"
                req.write_text(step.requirements)
                ro.append(Mount(req, REQUIREMENTS_IN_CONTAINER))
                argv += ["-r", REQUIREMENTS_IN_CONTAINER]
            else:
                argv += [*shlex.split(step.extra_options), *step.packages]
        case other:
            raise ValueError(f"{type(other).__name__} is not a step that runs a command")
    # The machine's pip settings first, so that an env() step of the image wins.
    env = {**BASE_ENV, **tools.env, **planned.env}
    return Command(
        argv=argv,
        env=env,
        cwd=planned.workdir,
        ro_mounts=[*tools.ro, *ro],
        rw_mounts=tools.rw,
        timeout_s=timeout_s,
    )


@dataclass(frozen=True)
class ToolEnv:
    """What a build container needs for pip and uv: variables and mounts."""

    env: dict[str, str] = field(default_factory=dict)
    ro: list[Mount] = field(default_factory=list)
    rw: list[Mount] = field(default_factory=list)


def tool_env(pip: PipSettings, pip_cache: Path) -> ToolEnv:
    """The machine's pip settings and CA bundle, and the shared download
    caches (pip's and uv's), for a step that may run pip or uv."""
    env, ro = pip.container()
    pip_cache.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PIP_CACHE_DIR": PIP_CACHE_IN_CONTAINER,
            "UV_CACHE_DIR": f"{PIP_CACHE_IN_CONTAINER}/uv",
            "PIP_ROOT_USER_ACTION": "ignore",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
    )
    return ToolEnv(env, ro, [Mount(pip_cache, PIP_CACHE_IN_CONTAINER)])


def run_each_argv(
    name: str, commands: Sequence[str], shell: Sequence[str] = ("/bin/sh", "-c")
) -> list[str]:
    """Run each of ``commands`` with ``shell`` (a Dockerfile's SHELL), echoing
    it first, stopping at the first that fails with its exit code."""
    script = _RUN_EACH.format(shell=shlex.join(shell))
    return ["/bin/sh", "-c", script, name, *commands]
