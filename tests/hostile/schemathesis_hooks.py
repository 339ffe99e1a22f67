"""schemathesis hooks of tests/hostile/test_schema.py: tus's PATCH body, application/offset+octet-stream, is
raw bytes as application/octet-stream is, and is sent the same way."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
