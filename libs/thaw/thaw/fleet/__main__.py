"""``python -m thaw.fleet ROOT [--check] [--web-domain D]``: write (or check)
ROOT/compose.yaml and ROOT/deploy/k8s/thaw.yaml from the fleet's description."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thaw.fleet.compose import render_compose
from thaw.fleet.k8s import EXAMPLE_DOMAIN, render_k8s

COMPOSE_FILE = "compose.yaml"
K8S_FILE = "deploy/k8s/thaw.yaml"


def rendered(web_domain: str = EXAMPLE_DOMAIN) -> dict[str, str]:
    """Each file's path (relative to the repository) and its text."""
    return {COMPOSE_FILE: render_compose(), K8S_FILE: render_k8s(web_domain)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thaw.fleet", description=__doc__)
    ap.add_argument("root", type=Path, help="the repository (or any directory to write into)")
    ap.add_argument("--check", action="store_true", help="fail when a file differs")
    ap.add_argument("--web-domain", default=EXAMPLE_DOMAIN, help="the Ingress's domain")
    args = ap.parse_args(argv)
    stale = []
    for rel, text in rendered(args.web_domain).items():
        path = args.root / rel
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    if stale:
        print(f"not what thaw.fleet renders: {', '.join(stale)} (run python -m thaw.fleet .)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
