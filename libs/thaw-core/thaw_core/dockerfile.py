"""A Dockerfile read into instructions, as Docker's own parser reads it.

Shared by the SDK (what a deploy uploads), the gateway (one progress label
per instruction) and the builder (what each instruction does). The syntax
handled: the ``# escape=`` directive, comments (also between continued
lines), line continuations, ``--flag=value`` options, and the exec (JSON
array) and shell forms. Heredocs (``RUN <<EOF``) are refused by line.

``substitute`` expands ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and
``${VAR:+alternative}`` as Docker does in the instructions it expands them
in (not in ``RUN``, whose shell does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*['\"]?[A-Za-z_][A-Za-z0-9_]*")
_FLAG = re.compile(r"^--([A-Za-z][A-Za-z0-9-]*)(?:=(.*))?$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DockerfileError(Exception):
    """The Dockerfile cannot be read (or built) as written; names its line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"Dockerfile line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class Instruction:
    line: int  # where it starts, from 1
    keyword: str  # upper case
    args: str  # the text after the keyword and its flags, continuations joined
    flags: dict[str, str] = field(default_factory=dict)
    # The exec form's argv (``CMD ["python", "app.py"]``); None for the shell form.
    exec_form: list[str] | None = None

    @property
    def label(self) -> str:
        flags = "".join(f"--{k}={v} " for k, v in self.flags.items())
        return f"{self.keyword} {flags}{self.args}".strip()


def parse(text: str) -> list[Instruction]:
    """The instructions of ``text``, in order."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:  # parser directives: comments at the very top
        m = _DIRECTIVE.match(raw.strip())
        if not m:
            break
        if m[1].lower() == "escape":
            if m[2] not in ("\\", "`"):
                raise DockerfileError(0, f"escape takes \\ or `, got {m[2]!r}")
            escape = m[2]
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not pending and not stripped:
            continue
        if stripped.startswith("#"):
            continue  # a comment, also between continued lines
        if not pending:
            start = number
        body = raw.rstrip()
        if body.endswith(escape):
            pending.append(body[: -len(escape)])
            continue
        pending.append(body)
        out.append(_instruction(start, "".join(pending)))
        pending = []
    if pending:
        out.append(_instruction(start, "".join(pending)))
    return out


def _instruction(line: int, text: str) -> Instruction:
    keyword, _, rest = text.strip().partition(" ")
    if "\t" in keyword:
        keyword, _, more = keyword.partition("\t")
        rest = f"{more} {rest}"
    keyword = keyword.upper()
    rest = rest.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, after = rest.partition(" ")
        m = _FLAG.match(token)
        if not m:
            raise DockerfileError(line, f"{keyword}: cannot read the option {token!r}")
        flags[m[1]] = m[2] if m[2] is not None else "true"
        rest = after.strip()
    if keyword in ("RUN", "COPY", "ADD") and _HEREDOC.search(rest):
        raise DockerfileError(line, f"{keyword} with a heredoc (<<) is not supported")
    return Instruction(line, keyword, rest, flags, _exec_form(rest))


def _exec_form(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # Docker runs it in the shell form then
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def substitute(text: str, env: Mapping[str, str], *, line: int = 0) -> str:
    """``text`` with ``$VAR`` forms expanded from ``env`` (unset: empty)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if c != "$" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        if text[i + 1] == "{":
            end = text.find("}", i + 2)
            if end < 0:
                raise DockerfileError(line, f"missing '}}' in {text!r}")
            out.append(_braced(text[i + 2 : end], env, line))
            i = end + 1
            continue
        m = _NAME.match(text, i + 1)
        if not m:
            out.append(c)
            i += 1
            continue
        out.append(env.get(m[0], ""))
        i = m.end()
    return "".join(out)


def _braced(inner: str, env: Mapping[str, str], line: int) -> str:
    m = _NAME.match(inner)
    if not m:
        raise DockerfileError(line, f"bad substitution ${{{inner}}}")
    name, rest = m[0], inner[m.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    if rest.startswith(":-"):
        return value if value else substitute(rest[2:], env, line=line)
    if rest.startswith(":+"):
        return substitute(rest[2:], env, line=line) if value else ""
    raise DockerfileError(line, f"bad substitution ${{{inner}}}: only :- and :+ are supported")


def split_words(text: str) -> list[str]:
    """Whitespace-separated words, quotes grouping as in ``ENV a="b c"``."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    started = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(text):
                i += 1
                current.append(text[i])
            else:
                current.append(c)
        elif c in "\"'":
            quote, started = c, True
        elif c == "\\" and i + 1 < len(text):
            i += 1
            current.append(text[i])
            started = True
        elif c.isspace():
            if started:
                words.append("".join(current))
                current, started = [], False
        else:
            current.append(c)
            started = True
        i += 1
    if quote:
        raise DockerfileError(0, f"unterminated quote in {text!r}")
    if started:
        words.append("".join(current))
    return words


def key_values(inst: Instruction, env: Mapping[str, str]) -> dict[str, str]:
    """``ENV``/``LABEL``/``ARG``-style pairs: ``k=v k2="v 2"``, or ``ENV k v`` (one pair)."""
    words = split_words(inst.args)
    if not words:
        raise DockerfileError(inst.line, f"{inst.keyword} needs arguments")
    if "=" not in words[0] and inst.keyword in ("ENV", "LABEL"):
        name, _, value = inst.args.strip().partition(" ")
        return {name: substitute(value.strip(), env, line=inst.line)}
    out: dict[str, str] = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not name or (not eq and inst.keyword != "ARG"):
            raise DockerfileError(inst.line, f"{inst.keyword}: expected key=value, got {word!r}")
        out[substitute(name, env, line=inst.line)] = (
            substitute(value, env, line=inst.line) if eq else None  # type: ignore[assignment]
        )
    return out
