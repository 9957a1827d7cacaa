"""The patterns and limits the gateway enforces, as JSON Schema for the
OpenAPI document, so that a schema-driven client (or a fuzzer) and the
server agree on what is valid: each is spelled from the very regex or
constant the gateway checks with. The Structs stay unconstrained on purpose:
the handlers' own checks answer errors that name the field in words
("invalid app name 'x y': use letters, digits, ...").
"""

from __future__ import annotations

from typing import Any

from thaw_core.schema import CALL_ID_RE, NAME_RE
from thaw_core.volumes.api import MAX_READ_REFS, MAX_VOLUME_BYTES
from thaw_core.volumes.paths import MAX_PATH_CHARS, VOLUME_PATH_PATTERN
from thaw_core.volumes.refs import REF_PATTERN

from thaw_gateway.call_stream import MAX_STREAM_CALLS, MAX_STREAM_TIMEOUT_S
from thaw_gateway.calls import MAX_BATCH_ITEMS
from thaw_gateway.deploy import SHA256_RE
from thaw_gateway.sandboxes import MAX_COMMAND_ARGS, MAX_TAGS, MAX_TIMEOUT_S
from thaw_gateway.secret_store import ENV_KEY_RE
from thaw_gateway.stores import _KEY_RE as DICT_KEY_RE
from thaw_gateway.stores import MAX_KEY_BYTES
from thaw_gateway.tokens_api import MAX_EXPIRES_IN_S

Schema = dict[str, Any]

NAME: Schema = {"type": "string", "pattern": NAME_RE.pattern, "maxLength": 63}
ID: Schema = {"type": "string", "pattern": CALL_ID_RE.pattern, "maxLength": 128}
SHA256: Schema = {"type": "string", "pattern": SHA256_RE.pattern}
ENV_KEY: Schema = {"type": "string", "pattern": ENV_KEY_RE.pattern, "maxLength": 256}
# A path in a volume.
VOLUME_PATH: Schema = {
    "type": "string",
    "pattern": VOLUME_PATH_PATTERN,
    "maxLength": MAX_PATH_CHARS,
}
# No environment can hold a NUL byte.
ENV_VALUE: Schema = {"type": "string", "pattern": "^[^\\x00]*$"}
ENV: Schema = {"propertyNames": ENV_KEY, "additionalProperties": ENV_VALUE, "minProperties": 1}

# An encoded Dict key (thaw.dict): ASCII, so characters are bytes.
DICT_KEY: Schema = {"type": "string", "pattern": DICT_KEY_RE.pattern, "maxLength": MAX_KEY_BYTES}

# A chunk by its sha256, or a small file's piece by its packed reference.
CHUNK_REF: Schema = {"type": "string", "pattern": REF_PATTERN}

# Path parameters, by name (the same name means the same rule in every path).
PATH_PARAMS: dict[str, Schema] = {
    "app": NAME,
    "function": NAME,
    "secret": NAME,
    "volume": NAME,
    "call_id": ID,
    "container_id": ID,
    "snapshot_id": ID,
    "sha256": SHA256,
    "chunk": CHUNK_REF,
}

# Query parameters, by name.
QUERY_PARAMS: dict[str, Schema] = {
    "app": NAME,
    "function": NAME,
    "limit": {"type": "integer", "minimum": 1},  # larger ones are lowered to the cap
    "wait": {"type": "number", "minimum": 0},  # likewise
    "path": VOLUME_PATH,  # only the volume routes take one
    "tag": {"type": "string", "pattern": "^[^=]+=.*$"},  # key=value (GET /v1/sandboxes)
}

# A process's argument or path: no NUL byte (the kernel takes none).
NO_NUL: Schema = {"type": "string", "pattern": "^[^\\x00]*$"}
SANDBOX_SECONDS: Schema = {"exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S}
PROCESS_ENV: Schema = {"propertyNames": ENV_KEY, "additionalProperties": ENV_VALUE}

# Fields of request bodies: (component, property) -> what is added to its schema.
BODY_FIELDS: dict[tuple[str, str], Schema] = {
    ("DeployRequest", "bundle_sha256"): SHA256,
    ("DeployRequest", "functions"): {"minItems": 1},
    ("FunctionSpec", "name"): NAME,
    ("FunctionSpec", "methods"): {"items": NAME},
    ("TokenRequest", "name"): NAME,
    ("TokenRequest", "apps"): {"items": NAME, "minItems": 1},
    ("TokenRequest", "expires_in_s"): {"exclusiveMinimum": 0, "maximum": MAX_EXPIRES_IN_S},
    ("SecretCreate", "name"): NAME,
    ("SecretCreate", "env"): ENV,
    ("SecretValues", "env"): ENV,
    ("VolumeCreate", "name"): NAME,
    ("VolumeCreate", "max_bytes"): {"exclusiveMinimum": 0, "maximum": MAX_VOLUME_BYTES},
    ("VolumeCopy", "src_paths"): {"minItems": 1, "items": VOLUME_PATH},
    ("VolumeCopy", "dst"): VOLUME_PATH,
    ("VolumeRemove", "path"): VOLUME_PATH,
    ("VolumeCommitBody", "deleted"): {"items": VOLUME_PATH},
    ("VolumeEntry", "path"): VOLUME_PATH,
    ("StreamRequest", "call_ids"): {"items": ID, "maxItems": MAX_STREAM_CALLS},
    ("StreamRequest", "timeout_s"): {"exclusiveMinimum": 0, "maximum": MAX_STREAM_TIMEOUT_S},
    ("ChunksMissing", "digests"): {"items": SHA256},
    ("ChunksRead", "refs"): {"items": CHUNK_REF, "maxItems": MAX_READ_REFS},
    ("BatchRequest", "items"): {"maxItems": MAX_BATCH_ITEMS},
    ("SandboxSpec", "app"): NAME,
    ("SandboxSpec", "sandbox_id"): {"maxLength": 0},  # the gateway gives it
    ("SandboxSpec", "command"): {"items": NO_NUL, "maxItems": MAX_COMMAND_ARGS},
    ("SandboxSpec", "timeout_s"): SANDBOX_SECONDS,
    ("SandboxSpec", "idle_timeout_s"): SANDBOX_SECONDS,
    ("SandboxSpec", "workdir"): {"pattern": "^(/[^\\x00]*)?$"},
    ("SandboxSpec", "env"): PROCESS_ENV,
    ("SandboxSpec", "tags"): {"maxProperties": MAX_TAGS},
    ("ExecStart", "argv"): {"items": NO_NUL, "minItems": 1},
    ("ExecStart", "workdir"): {"pattern": "^(/[^\\x00]*)?$"},
    ("ExecStart", "env"): PROCESS_ENV,
    ("ExecStart", "timeout_s"): {"exclusiveMinimum": 0},
    ("ExecRead", "offset"): {"minimum": 0},
    ("ExecRead", "wait_s"): {"minimum": 0},
    ("ExecRead", "max_bytes"): {"minimum": 1},
    ("ExecWrite", "offset"): {"minimum": 0},
    ("ExecWait", "wait_s"): {"minimum": 0},
    ("SandboxSetTags", "tags"): {"maxProperties": MAX_TAGS},
    ("AutoscalerUpdate", "min_containers"): {"minimum": 0},
    ("AutoscalerUpdate", "max_containers"): {"minimum": 0},
    ("AutoscalerUpdate", "buffer_containers"): {"minimum": 0},
    ("AutoscalerUpdate", "scaledown_window"): {"minimum": 0},
}


# Rules across fields: (component) -> what is added to its schema.
COMPONENTS: dict[str, Schema] = {
    # Only an invoke token is limited to some apps.
    "TokenRequest": {
        "if": {"properties": {"scope": {"not": {"const": "invoke"}}}},
        "then": {"properties": {"apps": {"type": "null"}}},
    },
}


# Dict and Queue operations (POST /v1/stores, one component each): their
# fields of these names, whichever operation has them.
STORE_FIELDS: dict[str, Schema] = {"name": NAME, "partition": NAME, "key": DICT_KEY}


def _store_operations(components: dict[str, Schema]) -> list[Schema]:
    return [c for n, c in components.items() if n.startswith(("Dict", "Queue"))]


# msgspec takes bytes as padded standard base64, and nothing else: JSON
# Schema's contentEncoding is only an annotation, so say it with a pattern.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _base64_patterns(schema: object) -> None:
    if isinstance(schema, dict):
        if schema.get("contentEncoding") == "base64" and "pattern" not in schema:
            schema["pattern"] = BASE64_PATTERN
        for value in schema.values():
            _base64_patterns(value)
    elif isinstance(schema, list):
        for value in schema:
            _base64_patterns(value)


def param_schema(where: str, name: str, default: Schema) -> Schema:
    table = PATH_PARAMS if where == "path" else QUERY_PARAMS
    return table.get(name, default)


def constrain(components: dict[str, Schema]) -> None:
    """Add ``BODY_FIELDS`` to the generated components (in place). A field
    that is not there (renamed, removed) is an error, not a silent gap."""
    for (component, prop), extra in BODY_FIELDS.items():
        properties = components[component]["properties"]
        if prop not in properties:
            raise KeyError(f"openapi_limits: {component} has no property {prop!r}")
        properties[prop] = _merged(properties[prop], extra)
    for component, extra in COMPONENTS.items():
        components[component].update(extra)
    for op in _store_operations(components):
        properties = op.get("properties", {})
        for prop, extra in STORE_FIELDS.items():
            if prop in properties:
                properties[prop] = _merged(properties[prop], extra)
    for component in components.values():
        _base64_patterns(component)
    # DictUpdate's items are [key, value] pairs.
    pair = components["DictUpdate"]["properties"]["items"]["items"]
    pair["prefixItems"][0] = _merged(pair["prefixItems"][0], DICT_KEY)


def _merged(schema: Schema, extra: Schema) -> Schema:
    # An optional field (``int | None``) is anyOf [the type, null]: the limits
    # are the type's, so that the null branch stays as it is.
    if "anyOf" in schema:
        branches = [b if b.get("type") == "null" else _merged(b, extra) for b in schema["anyOf"]]
        return {**schema, "anyOf": branches}
    return {**schema, **extra}
