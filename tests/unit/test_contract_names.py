"""The wire contract's names are spelled in one module, ``thaw_core.contract``.

A subject, stream name, blob key prefix or container env name written as a
literal anywhere else in ``libs/`` or ``services/`` drifts from the contract
the first time someone renames it; so does a service that talks to NATS
through ``bus.nc`` / ``bus.js`` instead of ``Bus``'s own methods.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from thaw_core import contract

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "libs/thaw-core/thaw_core/contract.py"
BUS = ROOT / "libs/thaw-core/thaw_core/bus"
# Runs under the image's python before thaw_core is importable: it spells the
# env names it needs itself, and test_bootstrap_agrees_with_the_contract
# checks them.
BOOTSTRAP = ROOT / "libs/thaw/thaw/runtime/bootstrap.py"

_SUBJECT_ROOTS = "invoke|result|cancel|health|agent|logs|event|snapshots|build|builder|secrets|volumes|web"
_STREAM_NAMES = {s.name for s in contract.STREAMS}
_BLOB_PREFIXES = (
    contract.BUNDLES_PREFIX,
    contract.FILES_PREFIX,
    contract.SNAPSHOTS_PREFIX,
    contract.LAYERS_PREFIX,
    contract.VOLUMES_PREFIX,
)
_SUBJECT = re.compile(rf"^thaw\.({_SUBJECT_ROOTS})(\.|$)")


def _sources() -> list[Path]:
    files = [*ROOT.glob("libs/*/*/**/*.py"), *ROOT.glob("services/*/*/**/*.py")]
    return sorted(
        p for p in files if p not in (CONTRACT, BOOTSTRAP) and "__pycache__" not in p.parts
    )


_NAMING_CALLS = {"getLogger", "get_tracer", "get_meter"}


def _called_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, with f-strings' literal parts joined around ``{}``
    (so ``f"thaw.logs.{app}"`` is seen as ``thaw.logs.{}``)."""
    out: list[tuple[int, str]] = []
    in_fstring: set[int] = set()
    for node in ast.walk(tree):
        # Logger and tracer names share the "thaw." root; they are not subjects.
        if isinstance(node, ast.Call) and _called_name(node) in _NAMING_CALLS:
            in_fstring.update(id(a) for a in ast.walk(node) if a is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in in_fstring:
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            )
            out.append((node.lineno, text))
            in_fstring.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in in_fstring
        ):
            out.append((node.lineno, node.value))
    return out


def _is_docstring_like(text: str) -> bool:
    return "\n" in text or " " in text.strip()


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for line, text in _string_constants(tree):
        if _is_docstring_like(text):
            continue
        what = ""
        if _SUBJECT.match(text):
            what = "subject"
        elif text in _STREAM_NAMES:
            what = "stream name"
        elif text.startswith(_BLOB_PREFIXES):
            what = "blob key prefix"
        elif text in contract.CONTAINER_ENV_NAMES:
            what = "container env name"
        if what:
            found.append(f"{path.relative_to(ROOT)}:{line}: {what} {text!r}")
    return found


def test_contract_names_are_spelled_only_in_the_contract_module() -> None:
    found = [v for p in _sources() for v in _violations(p)]
    assert not found, "spell these through thaw_core.contract:\n" + "\n".join(found)


def _raw_nats_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        # <anything>.bus.nc / .bus.js / ._bus.nc / bus.js ...
        if isinstance(node, ast.Attribute) and node.attr in {"nc", "js"}:
            base = node.value
            name = (
                base.attr
                if isinstance(base, ast.Attribute)
                else base.id
                if isinstance(base, ast.Name)
                else ""
            )
            if name.lstrip("_") == "bus":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}.{node.attr}")
    return found


def test_no_service_reaches_past_bus_into_nats() -> None:
    found = [v for p in _sources() if BUS not in p.parents for v in _raw_nats_uses(p)]
    assert not found, "use Bus's methods, not its NATS client:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (contract.EVENT_APP, "thaw.event.app.*"),
        (contract.INVOKE, "thaw.invoke.*.*"),
    ],
)
def test_wildcard(pattern: str, expected: str) -> None:
    assert contract.wildcard(pattern) == expected


def test_every_stream_owns_its_subjects() -> None:
    assert contract.INVOKE_STREAM.subjects == ("thaw.invoke.>",)
    assert contract.RESULTS_STREAM.subjects == ("thaw.result.>",)
    assert contract.LOGS_STREAM.subjects == ("thaw.logs.>",)
    assert contract.call_id_of_result_subject(contract.result_subject("c-1")) == "c-1"


def test_bootstrap_agrees_with_the_contract() -> None:
    from thaw.runtime import bootstrap

    spelled = {n: getattr(bootstrap, n) for n in dir(bootstrap) if n.startswith("ENV_")}
    assert spelled
    assert spelled == {n: getattr(contract, n) for n in spelled}
