"""Signed ``realtime.call.incoming`` deliveries, and a real ingress process to send them to.

Signing is written out here with hmac, as the official SDK computes it, rather than
borrowed from ``ingress.verify``, so a mistake there cannot hide itself in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, spawn, switchboard_argv, wait_until

SECRET = "whsec_" + base64.b64encode(b"ingress-component-test-secret!!").decode()


def incoming_event(
    call_id: str,
    *,
    caller: str = '"Ann Caller" <sip:+14155550100@sip.example.com;user=phone>;tag=9f',
    callee: str = "<sip:+18005550100@sip.example.com>",
    event_type: str = "realtime.call.incoming",
) -> bytes:
    event: dict[str, Any] = {
        "object": "event",
        "id": f"evt_{call_id}",
        "type": event_type,
        "created_at": int(time.time()),
        "data": {
            "call_id": call_id,
            "sip_headers": [
                {"name": "From", "value": caller},
                {"name": "To", "value": callee},
                {"name": "Call-ID", "value": f"{call_id}@carrier"},
                {"name": "X-Account", "value": "<script>alert(1)</script>"},
            ],
        },
    }
    return json.dumps(event).encode()


def signed_headers(
    body: bytes, webhook_id: str, *, timestamp_s: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    timestamp = str(int(time.time()) if timestamp_s is None else timestamp_s)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.{body.decode()}".encode()
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "content-type": "application/json",
        "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }


def start_ingress(log_dir: Path, redis_url: str, *, secret: str = SECRET) -> tuple[Child, str]:
    """``switchboard ingress`` on a free port; returns it and its base URL once healthy."""
    port = free_port()
    env = {"OPENAI_WEBHOOK_SECRET": secret, "SWITCHBOARD_REDIS_URL": redis_url}
    child = spawn(
        f"ingress-{port}",
        switchboard_argv("ingress", "--host", "127.0.0.1", "--port", str(port)),
        log_dir,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{url}/healthz"), 30.0, "ingress /healthz", child)
    except BaseException:
        child.stop()
        raise
    return child, url


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that carry ``labels``; 0 when there are none."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total
