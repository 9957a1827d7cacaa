"""``Function.with_options`` and ``Cls.with_options`` on the platform: a call
through the returned handle runs in a container of its own whose cgroup holds
the options given (seen from the host), while the deployed function keeps its
own; an option thaw cannot carry out is refused, naming it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import thaw as modal
from fixtures.platform import Platform
from thaw_gateway.variants import MAX_VARIANTS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("use_platform")]

_MIB = 1024 * 1024
_CGROUP = Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def variants(platform: Platform) -> None:
    platform.deploy("variants_app.py")


def limits(proc_self_cgroup: str) -> tuple[int, float]:
    """(memory limit in bytes, CPU quota in cores) of the cgroup a container
    reported from /proc/self/cgroup (no cgroup namespace: host paths)."""
    paths = {}
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path
    if (_CGROUP / "cgroup.controllers").exists():  # cgroup v2
        unified = _CGROUP / paths[""].lstrip("/")
        quota, period = (unified / "cpu.max").read_text().split()
        return int((unified / "memory.max").read_text()), int(quota) / int(period)
    memory = next(_CGROUP / c / p.lstrip("/") for c, p in paths.items() if "memory" in c.split(","))
    cpu = next(_CGROUP / c / p.lstrip("/") for c, p in paths.items() if "cpu" in c.split(","))
    quota = int((cpu / "cpu.cfs_quota_us").read_text())
    period = int((cpu / "cpu.cfs_period_us").read_text())
    return int((memory / "memory.limit_in_bytes").read_text()), quota / period


def test_a_functions_variant_runs_with_the_options_given(variants: None) -> None:
    where = modal.Function.from_name("variants", "where")
    bigger = where.with_options(cpu=0.5, memory=320)

    base, variant = where.remote(), bigger.remote()

    assert base != variant, "the variant's call ran in the deployed function's container"
    assert limits(base) == (256 * _MIB, 0.25)
    assert limits(variant) == (320 * _MIB, 0.5)
    # The same options again: the same variant, the same warm container.
    assert where.with_options(memory=320, cpu=0.5).remote() == variant


def test_a_class_variant_runs_with_the_options_given(variants: None) -> None:
    probe = modal.Cls.from_name("variants", "Probe")
    bigger = probe.with_options(cpu=(0.25, 0.75), memory=(256, 384))

    assert limits(bigger().where.remote()) == (384 * _MIB, 0.75)
    assert limits(probe().where.remote()) == (256 * _MIB, 0.25)


def test_options_thaw_cannot_carry_out_are_refused_by_name(variants: None) -> None:
    where = modal.Function.from_name("variants", "where")
    with pytest.raises(modal.exception.InvalidError, match="region="):
        where.with_options(region="us-east")
    with pytest.raises(modal.exception.InvalidError, match="memory"):
        where.with_options(memory=0)


def test_the_variants_of_a_function_are_bounded(platform: Platform, variants: None) -> None:
    def register(timeout_s: int) -> tuple[int, str]:
        req = urllib.request.Request(
            f"{platform.gateway_url}/v1/functions/variants/spare/variants",
            data=json.dumps({"timeout_s": timeout_s}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {platform.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())["spec"]["name"]
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    made = [register(10 + i) for i in range(MAX_VARIANTS)]
    assert all(status == 200 for status, _ in made), made
    assert len({name for _, name in made}) == MAX_VARIANTS
    assert register(10) == made[0]  # one made already is no new one
    status, body = register(10 + MAX_VARIANTS)
    assert status == 409 and f"the most it may have in one deploy ({MAX_VARIANTS})" in body
