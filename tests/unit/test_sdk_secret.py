"""thaw.Secret: what a spec says about each kind of secret (names, never
values), and reading .env files."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import thaw as modal
from thaw.exception import InvalidError
from thaw.secret import parse_dotenv, refs


def test_named_secrets_carry_their_required_keys() -> None:
    (ref,) = refs([modal.Secret.from_name("api", required_keys=["API_KEY"])])
    assert (ref.name, ref.required_keys, ref.app_scoped) == ("api", ["API_KEY"], False)
    with pytest.raises(InvalidError, match="environment"):
        modal.Secret.from_name("api", environment_name="prod")
    with pytest.raises(InvalidError, match="required_keys"):
        modal.Secret.from_name("api", required_keys="API_KEY")  # type: ignore[arg-type]


def test_values_made_here_stay_out_of_the_ref(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTED_HERE", "v-planted-1")
    made = [
        modal.Secret.from_dict({"A": "v-planted-2", "B": None}),
        modal.Secret.from_local_environ(["PLANTED_HERE"]),
        modal.Secret.from_dict({}),  # sets nothing: no ref
    ]
    found = refs(made)
    assert len(found) == 2 and all(r.app_scoped for r in found)
    assert b"v-planted" not in msgspec.json.encode(found)
    assert made[0].keys == ["A"] and "v-planted" not in repr(made[0])


def test_dotenv_files(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# a comment\n"
        "export A=1\n"
        "B = two words  # trailing\n"
        "C='single # kept'\n"
        'D="line\\nbreak \\"q\\""\n'
        "E=\n"
    )
    secret = modal.Secret.from_dotenv(tmp_path)
    assert secret.keys == ["A", "B", "C", "D", "E"]
    assert parse_dotenv((tmp_path / ".env").read_text()) == {
        "A": "1",
        "B": "two words",
        "C": "single # kept",
        "D": 'line\nbreak "q"',
        "E": "",
    }
    with pytest.raises(InvalidError, match=r"x.env:2: not a KEY=VALUE") as e:
        parse_dotenv("A=1\nthis is sk-not-shown\n", "x.env")
    assert "sk-not-shown" not in str(e.value)
    with pytest.raises(InvalidError, match="cannot read"):
        modal.Secret.from_dotenv(tmp_path / "absent")
