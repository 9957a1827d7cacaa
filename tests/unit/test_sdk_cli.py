"""The SDK's commands as a user runs them: `thaw run`, `thaw deploy`,
`thaw app ...`, `thaw token create`, against a fake gateway transport."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fixtures.fake_gateway import FakeGateway, fake_gateway  # noqa: F401 - fake_gateway is a fixture
from thaw.cli import main

APP = """
import thaw

app = thaw.App("{name}")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def letters(word: str):
    yield from word


@app.cls()
class Scaler:
    factor: int = thaw.parameter(default=10)

    @thaw.method()
    def scale(self, x: int) -> int:
        return x * self.factor


@app.local_entrypoint()
def main(n: int = 3, label: str = "result", loud: bool = False) -> None:
    value = square.remote(n)
    print(f"{{label.upper() if loud else label}}: {{value}}")
    print("mapped", list(square.map(range(n))))
"""


@pytest.fixture
def gateway(fake_gateway: FakeGateway) -> FakeGateway:
    return fake_gateway


@pytest.fixture
def app_file(tmp_path: Path) -> Iterator[Path]:
    """A fresh module per test: each is imported under its own name."""
    name = f"cliapp_{tmp_path.name.replace('-', '_')}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(APP.format(name="cli-app")))
    yield path
    sys.modules.pop(name, None)


def thaw(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_calls_the_entrypoint_with_flags_and_stops_the_app(
    gateway: FakeGateway, app_file: Path
) -> None:
    result = thaw("run", "-q", str(app_file), "--n", "4", "--label", "sq", "--loud")
    assert result.exit_code == 0, result.output
    assert "SQ: 16" in result.output and "mapped [0, 1, 4, 9]" in result.output
    name, request = gateway.deploys[-1]
    assert name == "cli-app" and request.ephemeral
    assert gateway.stopped == ["cli-app"]


def test_run_a_function_by_name_prints_its_result(gateway: FakeGateway, app_file: Path) -> None:
    result = thaw("run", "-q", f"{app_file}::square", "--x", "12")
    assert result.exit_code == 0, result.output
    assert "144" in result.output


def test_run_a_generator_and_a_class_method(gateway: FakeGateway, app_file: Path) -> None:
    result = thaw("run", "-q", f"{app_file}::letters", "--word", "ab")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == ["a", "b"]
    result = thaw("run", "-q", f"{app_file}::Scaler.scale", "--x", "5")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "50"


def test_run_with_a_bad_flag_is_a_usage_error_and_deploys_nothing(
    gateway: FakeGateway, app_file: Path
) -> None:
    result = thaw("run", str(app_file), "--n", "three")
    assert result.exit_code == 2
    assert "'three' is not a valid integer" in result.output
    assert gateway.deploys == []


def test_run_unknown_entry_lists_what_there_is(gateway: FakeGateway, app_file: Path) -> None:
    result = thaw("run", f"{app_file}::nope")
    assert result.exit_code == 1
    assert "has no entrypoint or function 'nope'" in result.output
    assert "main, square, letters, Scaler.scale" in result.output
    assert "Traceback" not in result.output


def test_run_stops_the_app_when_the_entrypoint_fails(gateway: FakeGateway, tmp_path: Path) -> None:
    path = tmp_path / "failing_entry.py"
    path.write_text(
        textwrap.dedent("""
        import thaw
        app = thaw.App("failing")

        @app.function()
        def f() -> None: ...

        @app.local_entrypoint()
        def main() -> None:
            raise RuntimeError("entrypoint broke")
    """)
    )
    try:
        with pytest.raises(RuntimeError, match="entrypoint broke"):
            thaw("run", "-q", str(path))
    finally:
        sys.modules.pop("failing_entry", None)
    assert gateway.stopped == ["failing"]


def test_deploy_prints_what_was_deployed(gateway: FakeGateway, app_file: Path) -> None:
    result = thaw("deploy", str(app_file))
    assert result.exit_code == 0, result.output
    assert "deployed cli-app version 1" in result.output
    for name in ("square", "letters", "Scaler", "methods: scale"):
        assert name in result.output
    name, request = gateway.deploys[-1]
    assert name == "cli-app" and not request.ephemeral
    assert gateway.stopped == []


def test_deploy_under_another_name(gateway: FakeGateway, app_file: Path) -> None:
    result = thaw("deploy", str(app_file), "--name", "staging")
    assert result.exit_code == 0, result.output
    assert gateway.deploys[-1][0] == "staging"


def test_deploy_of_a_file_without_an_app(gateway: FakeGateway, tmp_path: Path) -> None:
    (tmp_path / "no_app_here.py").write_text("x = 1\n")
    try:
        result = thaw("deploy", str(tmp_path / "no_app_here.py"))
    finally:
        sys.modules.pop("no_app_here", None)
    assert result.exit_code == 1 and "defines no thaw.App" in result.output


def test_app_list_stop_logs(gateway: FakeGateway, app_file: Path) -> None:
    assert thaw("deploy", str(app_file)).exit_code == 0
    listed = thaw("app", "list")
    assert listed.exit_code == 0 and "cli-app" in listed.output and "deployed" in listed.output
    stopped = thaw("app", "stop", "cli-app")
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert "cli-app" not in thaw("app", "list").output
    assert "cli-app" in thaw("app", "list", "--all").output
    logs = thaw("app", "logs", "cli-app")
    assert logs.exit_code == 0 and "line 0" in logs.output and "line 2" in logs.output


def test_gateway_errors_end_with_their_message_and_no_traceback(gateway: FakeGateway) -> None:
    result = thaw("app", "stop", "ghost")
    assert result.exit_code == 1
    assert "error: no app named 'ghost' is deployed" in result.output
    assert "Traceback" not in result.output


def test_token_create_shows_the_token(gateway: FakeGateway) -> None:
    result = thaw("token", "create", "ci", "--scope", "invoke", "--app", "hello")
    assert result.exit_code == 0 and "thaw_secret_for_ci" in result.output
    assert "scope invoke, apps hello" in result.output
    # A scope is not guessed; options a scope does not carry out are refused.
    result = thaw("token", "create", "ci")
    assert result.exit_code == 2 and "--scope" in result.output
    result = thaw("token", "create", "ci", "--scope", "read", "--app", "hello")
    assert result.exit_code == 1 and "--app limits an invoke token" in result.output
    result = thaw("token", "create", "ci", "--scope", "read", "--expires", "7")
    assert result.exit_code == 1 and "--expires takes a number and a unit" in result.output


def test_unreachable_gateway_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.nats import free_port

    monkeypatch.setenv("THAW_GATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("THAW_TOKEN", "t")
    result = thaw("app", "list")
    assert result.exit_code == 1
    assert "cannot reach the thaw gateway" in result.output and "thaw up" in result.output
