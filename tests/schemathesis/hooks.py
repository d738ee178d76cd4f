"""Schemathesis hooks for this API.

- The NDJSON body of POST /api/v3/batches/{id}/items: the OpenAPI document models it as
  the array of its lines; this serializer writes one JSON value per line, the way the SDK
  streams it.
- wrangler dev's dropped connection: see `_resend_what_wranglers_proxy_dropped`.
"""
import json

import requests
import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, list):
        return "".join(json.dumps(line) + "\n" for line in value).encode()
    return json.dumps(value).encode() + b"\n"


# What `wrangler dev`'s proxy answers when its pooled connection to the worker fails under
# a request that is not a GET or HEAD. The connection fails when it has idled 5 s, the
# moment both of its ends close it (workers-sdk issue 14641): the request is written to a
# closing socket, the worker never reads it, and the proxy resends only bodyless requests.
# The worker never answers this (its errors are JSON), nor does a deployed worker.
WRANGLER_DROPPED = b"Your worker restarted mid-request."

_send = requests.Session.request


def _resend_what_wranglers_proxy_dropped(session, *args, **kwargs):
    """Sends the request once more when wrangler's proxy dropped it, as a browser resends
    a request that a keep-alive connection closed under it (Schemathesis does too, for
    connections of its own): the answer checked is then the worker's."""
    response = _send(session, *args, **kwargs)
    if (
        response.status_code == 503
        and response.headers.get("content-type", "").startswith("text/plain")
        and response.content.startswith(WRANGLER_DROPPED)
    ):
        print(f"wrangler dev dropped {kwargs.get('method')} {kwargs.get('url')}: sent again")
        response = _send(session, *args, **kwargs)
    return response


requests.Session.request = _resend_what_wranglers_proxy_dropped
