"""The Dockerfile parser (thaw_core.dockerfile) and the builder's plan of a
Dockerfile: one step per instruction, layer ids that change from the changed
instruction on, build args, stages and what fails naming its line."""

from __future__ import annotations

import pytest
from thaw_builder.dockerfile_plan import plan_dockerfile, registry_images
from thaw_builder.plan import PlanError
from thaw_builder.registry import ImageConfig, Reference, RegistryImage, RegistryLayer
from thaw_core.dockerfile import DockerfileError, parse, split_words, substitute
from thaw_core.schema import FileEntry, FromDockerfile

SHA = "a" * 64


def test_continuations_comments_and_forms() -> None:
    text = """# syntax=docker/dockerfile:1
FROM base:1 AS build
# a comment
RUN apt-get update \\
    # comments between continued lines go
    && echo done
CMD ["python", "-m", "app"]
ENTRYPOINT echo hi
COPY --from=build --chown=app:app /a /b
"""
    got = parse(text)
    assert [(i.line, i.keyword) for i in got] == [
        (2, "FROM"),
        (4, "RUN"),
        (7, "CMD"),
        (8, "ENTRYPOINT"),
        (9, "COPY"),
    ]
    assert got[1].args == "apt-get update     && echo done"
    assert got[2].exec_form == ["python", "-m", "app"]
    assert got[3].exec_form is None
    assert got[4].flags == {"from": "build", "chown": "app:app"} and got[4].args == "/a /b"


def test_escape_directive_and_heredocs() -> None:
    got = parse("# escape=`\nFROM x\nRUN echo a `\n  b\n")
    assert got[1].args == "echo a   b"
    with pytest.raises(DockerfileError, match="line 2: RUN with a heredoc"):
        parse("FROM x\nRUN <<EOF\necho\nEOF\n")


def test_substitution() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert substitute("$A-${A}-${B:-d}-${A:+set}-${EMPTY:-e}-\\$A", env) == "1-1-d-set-e-$A"
    assert split_words('a="b c" d=e\\ f') == ["a=b c", "d=e f"]


def _image(tag: str) -> RegistryImage:
    ref = Reference("127.0.0.1:5000", tag, "1", "sha256:" + "b" * 64)
    layer = RegistryLayer("sha256:" + "c" * 64, "application/vnd.oci.image.layer.v1.tar+gzip", 1)
    return RegistryImage(ref, [layer], ImageConfig(env={"PATH": "/bin"}, workdir="/srv"))


DOCKERFILE = """ARG BASE=127.0.0.1:5000/base:1
FROM $BASE AS build
ARG GREETING=hello
RUN echo $GREETING > /greeting
FROM ${BASE}
ENV APP_MODE=prod
WORKDIR app
COPY --from=build /greeting ./
COPY src/ /opt/src/
USER 1000
RUN {run}
LABEL a=b
EXPOSE 8000
CMD ["python"]
"""


def _step(run: str = "id -u > /tmp/x", **build_args: str) -> FromDockerfile:
    return FromDockerfile(
        path="/ctx/Dockerfile",
        dockerfile=DOCKERFILE.replace("{run}", run),
        build_args=build_args,
        files=[FileEntry(dest="/src/m.py", sha256=SHA), FileEntry(dest="/other", sha256=SHA)],
    )


def _plan(step: FromDockerfile):  # type: ignore[no-untyped-def]
    return plan_dockerfile(step, {"127.0.0.1:5000/base:1": _image("base")})


def test_a_multi_stage_plan() -> None:
    assert registry_images(_step()) == ["127.0.0.1:5000/base:1"]
    plan = _plan(_step())
    kinds = [(s.index, s.docker.inst.keyword, s.kind, s.stage) for s in plan.steps]  # type: ignore[union-attr]
    assert kinds[:4] == [
        (0, "ARG", "meta", 0),
        (1, "FROM", "registry", 0),
        (2, "ARG", "meta", 0),
        (3, "RUN", "run", 0),
    ]
    assert [k[2] for k in kinds[4:]] == [
        "registry",
        "meta",
        "tree",
        "tree",
        "tree",
        "meta",
        "run",
        "meta",
        "meta",
        "meta",
    ]
    assert plan.final_stage == 1
    assert plan.env == {"PATH": "/bin", "APP_MODE": "prod"} and plan.workdir == "/srv/app"
    assert plan.config == {
        "user": "1000",
        "labels": {"a": "b"},
        "exposed_ports": ["8000/tcp"],
        "cmd": ["python"],
    }
    build_run = plan.steps[3].docker
    assert build_run is not None and build_run.env["GREETING"] == "hello"
    assert build_run.argv == ["/bin/sh", "-c", "echo $GREETING > /greeting"]
    copy_from = plan.steps[7].docker
    assert copy_from is not None and copy_from.from_stage == 0 and copy_from.dest == "/srv/app/"
    copy_ctx = plan.steps[8].docker
    assert copy_ctx is not None and [rel for rel, _ in copy_ctx.files] == ["m.py"]
    # Only the final stage's base is checked for a python the runtime can run on.
    assert plan.steps[1].registry is not None and not plan.steps[1].registry.need_python
    assert plan.steps[4].registry is not None and plan.steps[4].registry.need_python


def test_one_changed_run_changes_ids_from_there_on() -> None:
    a = [s.layer_id for s in _plan(_step()).steps]
    b = [s.layer_id for s in _plan(_step(run="echo changed")).steps]
    assert a[:10] == b[:10] and a[10:] != b[10:] and all(x != y for x, y in zip(a[10:], b[10:]))
    # A build arg changes the first stage's RUN, and what copies from that stage.
    c = [s.layer_id for s in _plan(_step(GREETING="hi")).steps]
    assert c[:3] != a[:3] and c[3] != a[3] and c[5:7] == a[5:7] and c[7] != a[7]


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("FROM 127.0.0.1:5000/base:1\nHEALTHCHECK CMD true\n", 2, "HEALTHCHECK is not supported"),
        ("FROM 127.0.0.1:5000/base:1\nVOLUME /data\n", 2, "VOLUME is not supported"),
        ("FROM 127.0.0.1:5000/base:1\nRUN --mount=type=cache,target=/x true\n", 2, "RUN --mount"),
        ("FROM 127.0.0.1:5000/base:1\nCOPY nothing /x\n", 2, "nothing: no such file"),
        ("FROM 127.0.0.1:5000/base:1\nCOPY --from=nope /a /b\n", 2, "no earlier stage"),
        ("RUN true\nFROM 127.0.0.1:5000/base:1\n", 1, "RUN before the first FROM"),
        ("FROM scratch\n", 1, "FROM scratch is not supported"),
    ],
)
def test_what_is_refused_names_its_line(text: str, line: int, match: str) -> None:
    step = FromDockerfile(path="/D", dockerfile=text)
    with pytest.raises(PlanError, match=f"line {line}: .*{match}") as e:
        _plan(step)
    assert e.value.op == "from_dockerfile"
