"""Schemathesis hooks for this API: the NDJSON body of POST /api/v3/batches/{id}/items.

The OpenAPI document models that body as the array of its lines; this serializer writes
one JSON value per line, the way the SDK streams it.
"""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, list):
        return "".join(json.dumps(line) + "\n" for line in value).encode()
    return json.dumps(value).encode() + b"\n"
