"""Schemathesis hooks for tests/e2e/test_openapi_fuzz.py (SCHEMATHESIS_HOOKS):
how to send the bodies it has no serializer for."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import SerializationContext


@schemathesis.serializer("application/zip")
def zip_body(ctx: SerializationContext, value: Any) -> dict[str, Any]:
    # A code bundle is bytes like any upload (format: binary).
    return {"data": value if isinstance(value, bytes) else str(value).encode()}
