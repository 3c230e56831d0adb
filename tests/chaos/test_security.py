"""Security of the running stack: secrets never leak, Redis with a password and over TLS.

The stack runs as real processes with their output captured to files and distinctive
secret values; the test provokes the error paths (bad signatures, bad admin tokens,
REST 401s from an emulator that wants another key, Redis unreachable) and then greps
every line of output and the ``/metrics`` of the ingress, the worker and the runner for
the secrets.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ingress import verify
from tests.support.chaos_stack import ChaosStack, HeldDelivery, StackOptions, chaos_stack
from tests.support.procs import wait_until
from tests.support.reconcile import reconcile, wait_settled, wait_slots_free

pytestmark = pytest.mark.timeout(180)

API_KEY = "sk-proj-LEAKCANARYapikey7f3e9c1d"
WEBHOOK_KEY = b"LEAKCANARY-webhook-signing-key!!"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
ADMIN_TOKEN = "LEAKCANARY-admin-token-5b2a"
REDIS_PASSWORD = "LEAKCANARYredispass0c4d"
SECRETS = (API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), ADMIN_TOKEN)


@contextmanager
def secret_stack(workdir: Path, **options: object) -> Iterator[ChaosStack]:
    settings = StackOptions(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        admin_token=ADMIN_TOKEN,
        redis_password=REDIS_PASSWORD,
        ring_timeout_s=10.0,
        metrics=True,
    )
    for name, value in options.items():
        setattr(settings, name, value)
    with chaos_stack(workdir, settings) as stack:
        yield stack


def one_clean_call(stack: ChaosStack) -> None:
    """The first call through ingress, worker and runner on this Redis, reconciled
    (this Redis has seen no other call, so its cluster totals are this call's)."""
    assert stack.placed == []
    call_id = stack.place("order-status")
    rdb = stack.client()
    try:
        wait_settled(stack.emulator, rdb, [call_id], 60.0)
        wait_slots_free(rdb, 10.0)
        result = reconcile(
            stack.emulator,
            rdb,
            [call_id],
            recorder=stack.recorder,
            tool_runs=stack.tool_run_ids(),
            cluster_calls=stack.placed,
        )
    finally:
        rdb.close()
    result.assert_clean()
    assert result.end_reasons == {"caller_hangup": 1}
    assert result.tool_runs == 1


def scrape(urls: dict[str, str]) -> str:
    """Every ``/metrics`` page in ``urls``, each checked to be a Switchboard exposition."""
    pages = []
    for name, url in sorted(urls.items()):
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200, name
        assert "switchboard_" in page.text, name
        pages.append(page.text)
    return "\n".join(pages)


def test_secrets_never_appear_in_logs_errors_or_metrics(tmp_path: Path) -> None:
    with secret_stack(tmp_path / "stack") as stack:
        one_clean_call(stack)
        ingress = stack.ingress_url
        answers: list[str] = []
        # Bad signatures: a forged one, one made with the wrong secret, and a replay.
        forged = HeldDelivery("wh_forged", b'{"type":"realtime.call.incoming","data":{}}')
        headers = {"webhook-id": "wh_forged", "webhook-timestamp": "1", "webhook-signature": "v1,x"}
        answers.append(
            httpx.post(f"{ingress}/webhooks/openai", content=forged.body, headers=headers).text
        )
        answers.append(stack.relay.deliver(forged, skew_s=-3600).text)
        # Admin API: no token, a wrong token, a token that is a prefix of the right one.
        for auth in (None, "Bearer wrong", f"Bearer {ADMIN_TOKEN[:-1]}"):
            sent = {"authorization": auth} if auth else {}
            answer = httpx.get(f"{ingress}/v1/calls", headers=sent, timeout=10)
            assert answer.status_code == 401, answer.text
            answers.append(answer.text)
        # REST 401s: the emulator now wants another key, so accepts are refused.
        assert stack.emulator.app is not None
        ctx = stack.emulator.app.state.ctx
        ctx.config = ctx.config.model_copy(update={"api_key": "sk-some-other-key"})
        refused = [stack.place("quick-question") for _ in range(2)]
        rdb = stack.client()
        try:
            wait_until(
                lambda: all(rdb.hget(f"sb:call:{{{c}}}", "state") == "failed" for c in refused),
                60.0,
                "calls refused with 401 recorded as failed",
            )
        finally:
            rdb.close()
        assert {name.split("-")[0] for name in stack.metrics_urls} == {"worker", "runner"}
        metrics = scrape({"ingress": f"{ingress}/metrics", **stack.metrics_urls})
        # Redis unreachable: webhooks get 503, readiness fails, workers and runners retry.
        stack.redis_proc.stop()
        answers.append(stack.relay.deliver(forged).text)
        ready = httpx.get(f"{ingress}/readyz", timeout=10)
        assert ready.status_code == 503
        answers.append(ready.text)
        wait_until(lambda: "rror" in stack.log_text(), 20.0, "processes report Redis unreachable")
        stack.redis_proc.start()
        # Again once Redis is back: the outage's errors may have been counted by then.
        metrics += scrape({"ingress": f"{ingress}/metrics", **stack.metrics_urls})

        captured = stack.log_text() + metrics + "\n".join(answers)
        assert (
            "401" in captured or "AuthenticationError" in captured or "invalid_api_key" in captured
        )
        for secret in (*SECRETS, REDIS_PASSWORD):
            assert secret not in captured, f"a secret leaked: {secret[:12]}..."


def test_redis_over_tls_with_a_password_serves_the_whole_stack(tmp_path: Path) -> None:
    with secret_stack(tmp_path / "stack", redis_tls=True) as stack:
        assert stack.redis_url.startswith("rediss://:")
        one_clean_call(stack)
        assert REDIS_PASSWORD not in stack.log_text()


def test_signatures_are_compared_in_constant_time() -> None:
    source = inspect.getsource(verify.verify)
    assert "hmac.compare_digest(" in source
    assert "==" not in source.split("expected = sign(")[1]
