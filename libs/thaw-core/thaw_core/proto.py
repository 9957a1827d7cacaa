"""Generate ``proto/`` from the schema module: the wire contract for other languages.

``python -m thaw_core.proto proto`` writes one JSON Schema per wire type
(``proto/schemas/<tag>.json``) and an AsyncAPI document listing every subject
and its payloads (``proto/asyncapi.json``). ``--check`` compares instead of
writing and exits 1 when proto/ is stale, which is how CI keeps the two in step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from thaw_core import schema


def _tag(t: type[schema.Message]) -> str:
    return str(t.__struct_config__.tag)


def _dump(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# What the JSON codec's bytes fields hold once base64-decoded: Invoke.args and
# Invoke.params decode to JsonCodecArgs, a successful Result.value to any JSON value.
_JSON_CODEC_SCHEMAS: dict[str, Any] = {
    "JsonCodecArgs": {
        "title": "JsonCodecArgs",
        "description": "Invoke.args / Invoke.params with codec 'json', once base64-decoded.",
        "type": "object",
        "properties": {"args": {"type": "array"}, "kwargs": {"type": "object"}},
        "required": ["args", "kwargs"],
    },
    "JsonCodecValue": {
        "title": "JsonCodecValue",
        "description": "Result.value with codec 'json', once base64-decoded: the return value.",
    },
}


def render() -> dict[str, str]:
    """Every file of proto/, relative path -> content."""
    files: dict[str, str] = {}
    (_, components) = msgspec.json.schema_components(
        schema.WIRE_TYPES, ref_template="#/components/schemas/{name}"
    )
    for t in schema.WIRE_TYPES:
        one = msgspec.json.schema(t)
        one["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        one["title"] = t.__name__
        files[f"schemas/{_tag(t)}.json"] = _dump(one)

    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for subject, (description, payloads) in schema.SUBJECTS.items():
        for t in payloads:
            messages[t.__name__] = {
                "name": _tag(t),
                "title": t.__name__,
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{t.__name__}"},
            }
        channels[subject] = {
            "address": subject,
            "description": description,
            "messages": {t.__name__: {"$ref": f"#/components/messages/{t.__name__}"} for t in payloads},
        }
    files["asyncapi.json"] = _dump(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "thaw wire contract",
                "version": "1",
                "description": "Generated from thaw_core.schema by `make proto`; do not edit."
                " Every message is a JSON object whose 'type' names it; bytes fields are"
                " base64 strings. Codec 'json' (for other languages) is described by"
                " JsonCodecArgs and JsonCodecValue; codec 'pickle' is Python-only.",
            },
            "defaultContentType": "application/json",
            "channels": channels,
            "components": {"schemas": {**components, **_JSON_CODEC_SCHEMAS}, "messages": messages},
        }
    )
    return files


def stale(out: Path) -> list[str]:
    """Paths under ``out`` that differ from what the schema module renders."""
    want = render()
    have = {str(p.relative_to(out)) for p in out.rglob("*.json")} if out.exists() else set()
    diff = [p for p, text in want.items() if not (out / p).exists() or (out / p).read_text() != text]
    return sorted(diff + [p for p in have - set(want)])


def write(out: Path) -> None:
    want = render()
    for p in out.rglob("*.json") if out.exists() else []:
        if str(p.relative_to(out)) not in want:
            p.unlink()
    for rel, text in want.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if OUT is stale")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale(args.out)
        if bad:
            print("proto/ is stale; run `make proto`:", *bad, sep="\n  ", file=sys.stderr)
            return 1
        return 0
    write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
