"""`helm test` for kubeloop: the server is ready and answers a prediction from features and,
where the release has a feature store, one by entity id (features from the cluster's Feast).

Run in the pipeline image as ``python /smoke/smoke_test.py <server URL>`` with the request bodies
in ``/smoke/request.json`` and, optionally, ``/smoke/entity-request.json``; when the server is
guarded, the token in ``KUBELOOP_API_TOKEN``. Standard library only; exits non-zero with the
reason on the first failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

READY_TIMEOUT_S = 120


def call(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("KUBELOOP_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def main(base: str) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            status, _ = call(f"{base}/health/ready")
        except OSError as exc:
            status = f"unreachable ({exc})"
        if status == 200:
            break
        if time.monotonic() > deadline:
            print(f"FAIL: {base}/health/ready is {status} after {READY_TIMEOUT_S}s")
            return 1
        time.sleep(2)
    print(f"ok: {base}/health/ready")
    here = os.path.dirname(__file__)
    for name in ("request.json", "entity-request.json"):
        path = os.path.join(here, name)
        if not os.path.exists(path):
            continue  # no entity request: the release has no feature store to ask
        with open(path, "rb") as fh:
            body = fh.read()
        status, payload = call(f"{base}/predict", body)
        if status != 200:
            print(f"FAIL: POST /predict ({name}) answered {status}: {payload[:500]!r}")
            return 1
        answer = json.loads(payload)
        print(f"ok: POST /predict ({name}) -> {json.dumps(answer)[:500]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].rstrip("/")))
