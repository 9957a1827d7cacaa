"""What each kind of build step runs in its build container."""

from __future__ import annotations

import shlex
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
_RUN_EACH = 'for c in "$@"; do printf "+ %s\\n" "$c"; /bin/sh -c "$c" || exit $?; done'
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
    rw: list[Mount] = []
    pip_env: dict[str, str] = {}
    match planned.step:
        case RunCommands(commands=commands):
            argv = ["/bin/sh", "-c", _RUN_EACH, "run_commands", *commands]
        case AptInstall(packages=packages):
            argv = ["/bin/sh", "-c", _APT, "apt_install", *packages]
        case PipInstall() | UvPipInstall() | PipInstallFromRequirements() as step:
            # uv is not in the base image; pip installs the same packages.
            settings = pip.with_step(
                index_url=step.index_url,
                extra_index_url=step.extra_index_url,
                find_links=step.find_links,
                pre=step.pre,
            )
            pip_env, ro = settings.container()
            pip_cache.mkdir(parents=True, exist_ok=True)
            rw.append(Mount(pip_cache, PIP_CACHE_IN_CONTAINER))
            pip_env["PIP_CACHE_DIR"] = PIP_CACHE_IN_CONTAINER
            pip_env["PIP_ROOT_USER_ACTION"] = "ignore"
            pip_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
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
    env = {**BASE_ENV, **pip_env, **planned.env}
    return Command(
        argv=argv, env=env, cwd=planned.workdir, ro_mounts=ro, rw_mounts=rw, timeout_s=timeout_s
    )
