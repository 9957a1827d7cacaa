"""The container's entry point: ``/usr/bin/python3 /opt/thaw/bootstrap.py``.

Standard library only: it runs under the image's own python3 before anything
of thaw is importable. It makes the code bundle and the runtime's packages
importable, then hands over to ``thaw.runtime.main``.

Both, and /root where ``add_local_python_source`` puts modules, are
*appended* to ``sys.path``: the packages the user's image installs
must win over the copies the agent mounts for the runtime, and the bundle
comes before those copies so that a user module is never shadowed by ours.
"""

import os
import sys

# thaw_core.contract's ENV_* names, spelled here because nothing of thaw can
# be imported yet; tests/unit/test_contract_names.py checks that they agree.
ENV_BUNDLE_DIR = "THAW_BUNDLE_DIR"
ENV_RUNTIME_PATHS = "THAW_RUNTIME_PATHS"
ENV_LOCAL_SOURCE_DIR = "THAW_LOCAL_SOURCE_DIR"

BUNDLE_DIR = "/thaw/bundle"
# Where ``Image.add_local_python_source`` puts modules, as on the hosted
# platform: importable right after the bundle.
LOCAL_SOURCE_DIR = "/root"


def _line_buffered() -> None:
    # stdout/stderr are pipes the agent turns into log lines: a print must
    # reach it at once, not when a block buffer fills or the process exits.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def _extend_sys_path() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] == here:
        # The script's directory holds only this file and the mount points;
        # nothing there is meant to be imported by user code.
        del sys.path[0]
    bundle = os.environ.get(ENV_BUNDLE_DIR, BUNDLE_DIR)
    runtime_paths = [p for p in os.environ.get(ENV_RUNTIME_PATHS, "").split(":") if p]
    local_sources = os.environ.get(ENV_LOCAL_SOURCE_DIR, LOCAL_SOURCE_DIR)
    for entry in [bundle, local_sources, *runtime_paths]:
        if entry not in sys.path:
            sys.path.append(entry)


def bootstrap() -> None:
    _line_buffered()
    _extend_sys_path()
    try:
        from thaw.runtime.main import main
    except ImportError as e:
        # Nothing can speak the agent protocol yet: say why on stderr, which
        # the agent shows as the container's log, and exit non-zero.
        print(
            f"thaw: cannot load the runtime under python {sys.version.split()[0]} "
            f"({sys.executable}): {type(e).__name__}: {e}\nsys.path = {sys.path}",
            file=sys.stderr,
        )
        sys.exit(1)
    main()


if __name__ == "__main__":
    bootstrap()
