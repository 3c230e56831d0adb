"""The load-generator process of the ingest benchmark: signed webhooks or bare POSTs.

    python -m bench.webhook_load --port 8080 --mode closed --connections 32 \
        --duration 30 --secret whsec_... --out /tmp/load.json

Every webhook is a distinct ``realtime.call.incoming`` delivery (its own call id and
webhook id), signed before the clock starts. ``--kind bare`` posts the same-sized body
to ``/bare`` (the ceiling server). Writes its raw latencies and counts to ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

import orjson
import uvloop

from bench.http_load import LoadResult, closed_loop, open_loop

WEBHOOK_PATH = "/webhooks/openai"
BARE_PATH = "/bare"


def incoming_body(call_id: str, created_at: int) -> bytes:
    """A ``realtime.call.incoming`` event shaped like OpenAI's (about 600 bytes)."""
    return orjson.dumps(
        {
            "object": "event",
            "id": "evt_" + call_id[4:],
            "type": "realtime.call.incoming",
            "created_at": created_at,
            "data": {
                "call_id": call_id,
                "sip_headers": [
                    {
                        "name": "From",
                        "value": '"+14155550100" <sip:+14155550100@sip.example.com>;tag=a1b2',
                    },
                    {"name": "To", "value": "<sip:+18005550100@sip.example.com>"},
                    {"name": "Call-ID", "value": f"{call_id}@carrier.example.com"},
                    {"name": "X-Account", "value": "acct-0042"},
                ],
                "sip_media_security": "srtp",
            },
        }
    )


def _request(path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_webhooks(port: int, secret: str, count: int) -> list[bytes]:
    """``count`` distinct signed webhook requests, complete HTTP/1.1 bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    prefix = secrets.token_hex(6)
    now = int(time.time())
    requests = []
    for n in range(count):
        call_id = f"rtc_{prefix}{n:010d}"
        body = incoming_body(call_id, now)
        webhook_id = f"wh_{prefix}{n:010d}"
        signed = f"{webhook_id}.{now}.".encode() + body
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        headers = {
            "content-type": "application/json",
            "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(now),
            "webhook-signature": f"v1,{signature}",
        }
        requests.append(_request(WEBHOOK_PATH, port, headers, body))
    return requests


def bare_requests(port: int) -> list[bytes]:
    """One request to the ceiling route, with a webhook-sized body and headers."""
    body = incoming_body("rtc_" + "0" * 32, int(time.time()))
    headers = {
        "content-type": "application/json",
        "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
        "webhook-id": "wh_" + "0" * 32,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 44,
    }
    return [_request(BARE_PATH, port, headers, body)]


def as_json(result: LoadResult) -> dict[str, object]:
    return {
        "started_at": result.started_at,
        "duration_s": result.duration_s,
        "completed": result.completed,
        "statuses": result.statuses,
        "errors": result.errors,
        "late_sends": result.late_sends,
        "latencies_s": result.latencies_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["closed", "open"], required=True)
    parser.add_argument("--kind", choices=["webhook", "bare"], default="webhook")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s")
    parser.add_argument("--count", type=int, default=0, help="distinct webhooks to sign")
    parser.add_argument("--secret", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.kind == "webhook":
        requests = signed_webhooks(args.port, args.secret, args.count)
    else:
        requests = bare_requests(args.port)
    host = "127.0.0.1"
    if args.mode == "closed":
        run = closed_loop(host, args.port, requests, args.connections, args.duration, args.warmup)
    else:
        run = open_loop(
            host, args.port, requests, args.connections, args.rate, args.duration, args.warmup
        )
    result = uvloop.run(run)
    args.out.write_text(json.dumps(as_json(result)))


if __name__ == "__main__":
    main()
