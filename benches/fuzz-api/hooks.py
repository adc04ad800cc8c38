"""schemathesis hooks of `just fuzz-api` (loaded through SCHEMATHESIS_HOOKS).

GitHub webhook deliveries are authenticated by an HMAC of the body, which
the fuzzer cannot produce: without it every generated delivery stops at
401. This hook signs each request to POST /api/webhooks/github with the
run's webhook secret (FUZZ_WEBHOOK_SECRET), so the payload parsing, the
repository and branch matching and the push triggers are fuzzed too. The
missing and wrong signature cases have their own tests in
crates/dashboard/tests/dashboard/api.rs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import schemathesis
from schemathesis.core import NOT_SET

WEBHOOK_PATH = "/api/webhooks/github"


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != WEBHOOK_PATH:
        return
    secret = os.environ["FUZZ_WEBHOOK_SECRET"].encode()
    if case.body is NOT_SET or case.body is None:
        body = b""
    elif isinstance(case.body, bytes):
        body = case.body
    else:
        # Sent as these exact bytes (a bytes body goes out unchanged).
        body = json.dumps(case.body).encode()
    case.body = body
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    headers = dict(case.headers or {})
    headers["X-Hub-Signature-256"] = f"sha256={digest}"
    case.headers = headers
