"""The builder's planning and pip settings, without servers: layer ids of
image specs as the SDK sends them, refusals of what cannot be built, and how
the machine's pip configuration reaches a build container."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import thaw
from thaw_builder.pipconf import IN_CONTAINER, PipSettings
from thaw_builder.plan import PlanError, make_plan
from thaw_core import layers
from thaw_core.schema import ImageSpec

SHA = "ab" * 32


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "rootfs/etc").mkdir(parents=True)
    (tmp_path / "rootfs/etc/thaw-rootfs").write_text("suite=bookworm\npython=3.11.2\nbuilt=x\n")
    return tmp_path / "rootfs"


def spec(value: dict[str, Any]) -> ImageSpec:
    return msgspec.json.decode(msgspec.json.encode(value), type=ImageSpec)


def ids(image: thaw.Image, rootfs: Path) -> list[str]:
    return [s.layer_id for s in make_plan(spec(image.spec()), rootfs).steps]


def test_sdk_images_plan_and_one_changed_step_changes_only_itself_and_later(rootfs: Path) -> None:
    base = thaw.Image.debian_slim()
    a = base.pip_install("six").run_commands("echo hi > /hello").env({"A": "1"})
    b = base.pip_install("six").run_commands("echo bye > /hello").env({"A": "1"})
    ia, ib = ids(a, rootfs), ids(b, rootfs)
    assert ia[:2] == ib[:2] and ia[2] != ib[2] and ia[3] != ib[3]
    assert ids(a, rootfs) == ia  # deterministic
    assert ia[0] == layers.base_layer_id(rootfs)
    assert ids(thaw.Image.debian_slim(python_version="3.11"), rootfs)[0] == ia[0]


def test_a_python_version_plans_on_its_own_rootfs_with_the_runtime_layer(rootfs: Path) -> None:
    # Beside the default, as make-rootfs.sh lays them out.
    trixie = rootfs.parent / "trixie-python"
    (trixie / "etc").mkdir(parents=True)
    (trixie / "etc/thaw-rootfs").write_text("suite=trixie\npython=3.13.5\nbuilt=x\n")
    image = thaw.Image.debian_slim(python_version="3.13").pip_install("six")
    plan = make_plan(spec(image.spec()), rootfs)
    assert plan.python_version == "3.13"
    base, runtime, pip = plan.steps
    assert (base.kind, base.rootfs, base.layer_id) == (
        "base",
        trixie,
        layers.base_layer_id(trixie, "3.13"),
    )
    # The runtime's packages, shown as part of step 0; the user's step keeps its index.
    assert (runtime.index, runtime.kind, pip.index) == (0, "run", 1)
    assert any(p.startswith("msgspec==") for p in runtime.step.packages)  # type: ignore[union-attr]
    # Every image on that base shares the runtime layer.
    other = make_plan(spec(thaw.Image.debian_slim(python_version="3.13").spec()), rootfs)
    assert other.image_id == runtime.layer_id
    # The default version has no runtime layer (the agent mounts its own packages).
    assert [s.kind for s in make_plan(spec(thaw.Image.debian_slim().spec()), rootfs).steps] == [
        "base"
    ]
    # debian_slim() from a 3.13 client gets 3.13; from a 3.12 one, the default.
    hinted = {"steps": [{"op": "debian_slim", "client_python": "3.13"}]}
    assert make_plan(spec(hinted), rootfs).python_version == "3.13"
    hinted = {"steps": [{"op": "debian_slim", "client_python": "3.12"}]}
    assert make_plan(spec(hinted), rootfs).python_version == "3.11"
    with pytest.raises(PlanError) as e:
        make_plan(spec({"steps": [{"op": "debian_slim", "python_version": "3.12"}]}), rootfs)
    assert "Python 3.11 (rootfs), Python 3.13 (trixie-python)" in str(e.value)
    assert plan.python == ""  # the base's /usr/bin/python3


def test_a_base_made_with_another_python3_x_names_it_in_the_manifest(rootfs: Path) -> None:
    forky = rootfs.parent / "forky-python3.15"
    (forky / "etc").mkdir(parents=True)
    (forky / "etc/thaw-rootfs").write_text(
        "suite=forky\npython=3.15.0\npython_path=/usr/local/bin/python3\nbuilt=x\n"
    )
    plan = make_plan(spec({"steps": [{"op": "debian_slim", "python_version": "3.15"}]}), rootfs)
    assert (plan.python_version, plan.python) == ("3.15", "/usr/local/bin/python3")
    assert plan.steps[0].rootfs == forky


def test_image_env_and_workdir_accumulate(rootfs: Path) -> None:
    image = (
        thaw.Image.debian_slim()
        .env({"A": "1", "B": "2"})
        .workdir("/app")
        .run_commands("true")
        .env({"A": "3"})
    )
    plan = make_plan(spec(image.spec()), rootfs)
    assert plan.env == {"A": "3", "B": "2"} and plan.workdir == "/app"
    run = plan.steps[3]
    assert (run.kind, run.env, run.workdir) == ("run", {"A": "1", "B": "2"}, "/app")
    assert [s.kind for s in plan.steps] == ["base", "meta", "meta", "run", "meta"]
    assert plan.image_id == plan.steps[-1].layer_id


def test_added_files_are_identified_by_content_not_by_local_path(rootfs: Path) -> None:
    def image(local: str, sha: str) -> dict[str, Any]:
        return {
            "steps": [
                {"op": "debian_slim"},
                {
                    "op": "add_local_file",
                    "local_path": local,
                    "remote_path": "/app/x",
                    "files": [{"dest": "/app/x", "sha256": sha}],
                },
            ]
        }

    one = make_plan(spec(image("/home/a/x", SHA)), rootfs).image_id
    assert make_plan(spec(image("/home/b/x", SHA)), rootfs).image_id == one
    assert make_plan(spec(image("/home/a/x", "cd" * 32)), rootfs).image_id != one
    explicit = image("/home/a/x", SHA)
    explicit["steps"][1]["files"][0]["mode"] = 0o644  # the default, spelled out
    assert make_plan(spec(explicit), rootfs).image_id == one
    explicit["steps"][1]["files"][0]["mode"] = 0o755
    assert make_plan(spec(explicit), rootfs).image_id != one


@pytest.mark.parametrize(
    ("steps", "step", "message"),
    [
        ([], -1, "no steps"),
        ([{"op": "pip_install", "packages": ["six"]}], 0, "debian_slim"),
        ([{"op": "from_registry", "tag": "python:3.12"}], 0, "not resolved"),
        ([{"op": "from_registry", "tag": "python:3.12", "add_python": "3.9"}], 0, "not resolved"),
        ([{"op": "debian_slim", "python_version": "3.12"}], 0, "Python 3.11"),
        ([{"op": "debian_slim"}, {"op": "debian_slim"}], 1, "first step"),
        ([{"op": "debian_slim"}, {"op": "env", "vars": {"1A": "x"}}], 1, "1A"),
        ([{"op": "debian_slim"}, {"op": "run_commands", "commands": [" "]}], 1, "empty"),
        (
            [{"op": "debian_slim"}, {"op": "pip_install_from_requirements", "path": "/r.txt"}],
            1,
            "requirements",
        ),
        (
            [
                {"op": "debian_slim"},
                {
                    "op": "add_local_dir",
                    "remote_path": "/a",
                    "files": [{"dest": "a", "sha256": SHA}],
                },
            ],
            1,
            "absolute",
        ),
        (
            [
                {"op": "debian_slim"},
                {
                    "op": "add_local_dir",
                    "remote_path": "/a",
                    "files": [{"dest": "/a", "sha256": "x"}],
                },
            ],
            1,
            "sha256",
        ),
    ],
)
def test_unbuildable_specs_name_the_step(
    rootfs: Path, steps: list[dict[str, Any]], step: int, message: str
) -> None:
    with pytest.raises(PlanError) as err:
        make_plan(spec({"steps": steps}), rootfs)
    assert err.value.step == step and message in str(err.value)


# ---------------------------------------------------------------- pip settings

CONFIG_LIST = """\
global.index-url='https://global.example/simple'
global.extra-index-url='file:///srv/pypi/simple https://more.example/simple'
install.index-url='https://install.example/simple'
global.timeout='30'
global.user='ignored: not a source option'
:env:.find-links='/srv/wheels'
:env:.cert='/srv/ca.pem'
"""


def test_pip_config_list_is_read_with_pips_precedence() -> None:
    s = PipSettings.parse(CONFIG_LIST)
    assert s.index_url == "https://install.example/simple"  # install beats global
    assert s.extra_index_urls == ("file:///srv/pypi/simple", "https://more.example/simple")
    assert s.find_links == ("/srv/wheels",)
    assert dict(s.options) == {"timeout": "30", "cert": "/srv/ca.pem"}


def test_local_pip_sources_are_mounted_into_the_container(tmp_path: Path) -> None:
    (tmp_path / "pypi/simple").mkdir(parents=True)
    (tmp_path / "pypi/files").mkdir()
    (tmp_path / "wheels").mkdir()
    (tmp_path / "ca.pem").write_text("cert")
    s = PipSettings(
        index_url="https://mirror.example/simple",
        extra_index_urls=(f"file://{tmp_path}/pypi/simple", "https://more.example/simple"),
        find_links=(str(tmp_path / "wheels"), str(tmp_path / "missing")),
        options={"cert": str(tmp_path / "ca.pem"), "timeout": "30"},
    ).with_step(extra_index_url="https://step.example/simple", pre=True)
    env, mounts = s.container()
    where = {m.source: m.destination for m in mounts}
    # The index is mounted with its parent, where its pages' links lead.
    index_dir = where[tmp_path / "pypi"]
    assert env["PIP_EXTRA_INDEX_URL"].split() == [
        f"file://{index_dir}/simple",
        "https://more.example/simple",
        "https://step.example/simple",
    ]
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["PIP_FIND_LINKS"] == where[tmp_path / "wheels"]  # the missing dir is dropped
    assert env["PIP_CERT"] == where[tmp_path / "ca.pem"]
    assert env["PIP_TIMEOUT"] == "30" and env["PIP_PRE"] == "1"
    assert all(m.destination.startswith(IN_CONTAINER + "/") for m in mounts)
    # uv gets the same settings under its own names.
    assert env["UV_EXTRA_INDEX_URL"] == env["PIP_EXTRA_INDEX_URL"]
    assert env["UV_FIND_LINKS"] == env["PIP_FIND_LINKS"]
    # The CA bundle reaches every tool, not only pip.
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["PIP_CERT"]
    assert PipSettings().with_step(index_url="https://own.example/simple").container()[0] == {
        "PIP_INDEX_URL": "https://own.example/simple",
        "UV_INDEX_URL": "https://own.example/simple",
    }


def test_the_machines_ca_bundle_is_mounted_when_pip_names_none(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("cert")
    env, mounts = PipSettings(ca_bundle=str(tmp_path / "ca.pem")).container()
    assert [m.source for m in mounts] == [tmp_path / "ca.pem"]
    assert env["SSL_CERT_FILE"] == env["PIP_CERT"] == mounts[0].destination


def test_the_machines_pip_environment_is_picked_up() -> None:
    env = {**os.environ, "PIP_INDEX_URL": "https://private.example/simple"}
    settings = PipSettings.from_host(env)
    if settings == PipSettings():
        pytest.skip("no pip on this machine to run `pip config list`")
    assert settings.index_url == "https://private.example/simple"
