"""YAML as these deployment files are written: keys in the order given, no
anchors (each service spelled out), a header comment that says where it
came from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(docs: Iterable[Any], header: str) -> str:
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines())
    body = yaml.dump_all(list(docs), Dumper=_Dumper, sort_keys=False, width=100)
    return comment + body
