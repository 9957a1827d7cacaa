"""The builder machine's pip settings, carried into build containers.

A team with a private mirror configures pip once on its builder machines
(``/etc/pip.conf``, ``PIP_INDEX_URL``, ...); images built there must use that
mirror too. ``PipSettings.from_host()`` reads what ``pip config list`` reports
(config files and ``PIP_*`` variables, environment first), keeps the options
that decide where packages come from, and ``container()`` turns them into
``PIP_*`` variables (and uv's ``UV_*`` twins) for the build container: every
step that may run pip or uv gets them, ``run_commands`` as much as
``pip_install``. The machine's CA bundle (pip's ``cert``, else
``SSL_CERT_FILE`` and its kin) is handed to the container the same way, as
``PIP_CERT``, ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` and
``CURL_CA_BUNDLE``, so a mirror or proxy with a private CA works for any
tool. Nothing of this is written into the image: it is variables and
read-only bind mounts, gone when the step ends. Local paths (``find-links``
dirs, ``file://`` indexes, the ``cert`` bundle) do not exist inside the
container, so they are bind-mounted read-only under ``/.thaw-build/pip`` and
the variables point there. A local index is mounted with its parent dir,
since its pages link to files beside it (``<root>/simple`` and
``<root>/files``).

A step's own ``index_url`` replaces the machine's index; its
``extra_index_url`` and ``find_links`` are added to the machine's; ``pre``
sets ``PIP_PRE``. None of this is part of a layer id: where a package was
downloaded from does not change what the image is.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

IN_CONTAINER = "/.thaw-build/pip"

# Options that say where packages come from and how to reach it.
_LIST_OPTIONS = ("extra-index-url", "find-links", "trusted-host")
_SCALAR_OPTIONS = (
    "index-url",
    "cert",
    "client-cert",
    "proxy",
    "timeout",
    "default-timeout",
    "retries",
    "pre",
    "no-index",
    "prefer-binary",
    "only-binary",
    "no-binary",
)
# Later sections win, as in pip for `pip install`.
_SECTIONS = ("global", "install", ":env:")
# Where the machine's CA bundle may be named when pip's config does not name one.
_CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# uv reads the same settings under its own names.
_UV_TWINS = {
    "PIP_INDEX_URL": "UV_INDEX_URL",
    "PIP_EXTRA_INDEX_URL": "UV_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS": "UV_FIND_LINKS",
    "PIP_TRUSTED_HOST": "UV_INSECURE_HOST",
    "PIP_PRE": "UV_PRERELEASE",
}
_LINE = re.compile(r"^(?P<section>[^.]+)\.(?P<key>[a-z0-9-]+)=(?P<value>.*)$")


@dataclass(frozen=True)
class Mount:
    source: Path
    destination: str


@dataclass(frozen=True)
class PipSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    # Other options, pip's names ("default-timeout": "180").
    options: Mapping[str, str] = field(default_factory=dict)
    # The machine's CA bundle when pip's own ``cert`` option names none.
    ca_bundle: str | None = None

    @classmethod
    def from_host(cls, env: Mapping[str, str] | None = None) -> PipSettings:
        """What ``pip config list`` says on this machine (an empty setting when
        no pip can be run: the build containers then use pip's defaults)."""
        environ = dict(os.environ if env is None else env)
        settings = cls.parse(_pip_config_list(environ))
        bundle = next((environ[v] for v in _CA_VARIABLES if environ.get(v)), None)
        return replace(settings, ca_bundle=bundle)

    @classmethod
    def parse(cls, config_list: str) -> PipSettings:
        """Settings from the output of ``pip config list``."""
        found: dict[str, dict[str, str]] = {s: {} for s in _SECTIONS}
        for line in config_list.splitlines():
            m = _LINE.match(line.strip())
            if not m or m["section"] not in found:
                continue
            try:
                value = ast.literal_eval(m["value"])
            except (ValueError, SyntaxError):
                continue
            found[m["section"]][m["key"]] = str(value)
        merged: dict[str, str] = {}
        for section in _SECTIONS:
            merged.update(found[section])
        wanted = {k: v for k, v in merged.items() if k in _SCALAR_OPTIONS + _LIST_OPTIONS}
        return cls(
            index_url=wanted.pop("index-url", None),
            extra_index_urls=tuple(wanted.pop("extra-index-url", "").split()),
            find_links=tuple(wanted.pop("find-links", "").split()),
            trusted_hosts=tuple(wanted.pop("trusted-host", "").split()),
            options=wanted,
        )

    def with_step(
        self,
        *,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
        pre: bool = False,
    ) -> PipSettings:
        options = dict(self.options)
        if pre:
            options["pre"] = "1"
        return replace(
            self,
            index_url=index_url or self.index_url,
            extra_index_urls=self.extra_index_urls + tuple((extra_index_url or "").split()),
            find_links=self.find_links + tuple((find_links or "").split()),
            options=options,
        )

    def container(self) -> tuple[dict[str, str], list[Mount]]:
        """``PIP_*``/``UV_*``/CA variables and the read-only bind mounts they need."""
        mounts: list[Mount] = []

        def local(path: Path) -> str | None:
            """Where ``path`` is seen inside the container; None if it does not exist."""
            if not path.exists():
                return None
            dest = f"{IN_CONTAINER}/{len(mounts)}"
            mounts.append(Mount(path.resolve(), dest))
            return dest

        def url(value: str, *, index: bool = False) -> str | None:
            path = _local_path(value)
            if path is None:
                return value
            if not path.exists():
                log.warning("pip setting %s names a path that does not exist; ignored", value)
                return None
            if index and path.is_dir():
                # An index's pages link to files beside it (<root>/simple/x/
                # -> ../../files/x.whl): mount its parent too.
                dest = local(path.resolve().parent)
                assert dest is not None
                dest = f"{dest}/{path.resolve().name}"
            else:
                dest = local(path)
                assert dest is not None
            return f"file://{dest}" if value.startswith("file:") else dest

        env: dict[str, str] = {}
        if self.index_url and (u := url(self.index_url, index=True)):
            env["PIP_INDEX_URL"] = u
        extra = [u for v in self.extra_index_urls if (u := url(v, index=True))]
        links = [u for v in self.find_links if (u := url(v))]
        for name, values in (
            ("PIP_EXTRA_INDEX_URL", extra),
            ("PIP_FIND_LINKS", links),
            ("PIP_TRUSTED_HOST", list(self.trusted_hosts)),
        ):
            if values:
                env[name] = " ".join(values)
        for key, value in self.options.items():
            if key in ("cert", "client-cert"):
                dest = local(Path(value))
                if dest is None:
                    continue
                value = dest
            env["PIP_" + key.upper().replace("-", "_")] = value
        if "PIP_CERT" not in env and self.ca_bundle and (dest := local(Path(self.ca_bundle))):
            env["PIP_CERT"] = dest
        if "PIP_CERT" in env:
            env.update(dict.fromkeys(_CA_VARIABLES, env["PIP_CERT"]))
        for pip_name, uv_name in _UV_TWINS.items():
            if pip_name in env:
                env[uv_name] = "allow" if uv_name == "UV_PRERELEASE" else env[pip_name]
        return env, mounts


def _local_path(value: str) -> Path | None:
    """The local path a pip URL setting names, or None for a remote URL."""
    parts = urlsplit(value)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # http, https, ... (not a drive letter)
        return None
    return Path(value)


def _pip_config_list(env: dict[str, str]) -> str:
    for argv in _pip_candidates():
        try:
            done = subprocess.run(
                [*argv, "config", "list"],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return done.stdout
    log.warning("no pip found to read this machine's pip settings; builds use pip's defaults")
    return ""


def _pip_candidates() -> list[list[str]]:
    found = [[sys.executable, "-m", "pip"]]
    for name in ("python3", "pip3", "pip"):
        if path := shutil.which(name):
            found.append([path, "-m", "pip"] if name == "python3" else [path])
    return found
