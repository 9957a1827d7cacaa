"""What every wire type shares: the two Struct bases, the clock, and the name rule.

Every message is tagged (field ``type``) so that a subject which carries
several kinds decodes into a union and is dispatched with ``match``. Unknown
fields are refused, so a producer that drifts from the schema is caught at
the first message rather than silently misread.
"""

from __future__ import annotations

import re
import time

import msgspec

# App, function and class names: they become NATS subject tokens and durable
# consumer names, where '.', '*', '>' and whitespace have meaning.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use letters, digits, '_' and '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


class Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the nested, untagged parts of messages."""


class Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
):
    """Base of every wire type. Subclasses set ``tag=`` to their wire name."""


def now() -> float:
    return time.time()
