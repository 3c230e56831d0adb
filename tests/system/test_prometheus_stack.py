"""A real Prometheus scraping a real stack: every dashboard query has data; alerts fire.

The stack is ``switchboard ingress``, ``worker`` (prefork, multiprocess metrics),
``runner`` and ``emulator`` processes on a real Redis. Prometheus (the Debian package,
``make prometheus``) runs the deployed ``prometheus.yml`` and ``alerts.yml``, with the
compose service discovery swapped for these processes' ports, a 1 s scrape and
evaluation interval and every ``for:`` shortened to 1 s. Calls are placed through the
emulator, so they go the whole way: signed webhook, Celery routing and accept, the
runner's sideband session with tools, a transfer and an operator command. The last
test drains the runner through the admin API, so it leaves the stack without one.
"""

from __future__ import annotations

import base64
import contextlib
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.observability.deploy_files import dashboards, local_config, shortened_rules, tool
from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, spawn, switchboard_argv, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

SECRET = "whsec_" + base64.b64encode(b"prometheus-stack-test-secret!!!!").decode()
ADMIN_TOKEN = "prometheus-stack-admin"
BLOCKED_CALLER = "+15550006660"
"""Rejected (603) by the demo policy."""
JOBS = ("ingress", "worker", "runner", "emulator")
RUNNER_ID = "obs-runner"
DRAIN_GRACE_S = 8.0
"""Long enough for Prometheus to see the drain; short enough for a quick teardown."""
ON_HOLD = "on-hold"
ON_HOLD_SCENARIO = f"""\
name: {ON_HOLD}
description: The caller waits silently on the line until the call is hung up.
greeting_wait_s: 0
max_duration_s: 3600
steps:
  - silence_s: 2000
"""
"""About 100 s at the stack's time scale: the call stays live until the test ends it."""


@dataclass
class Stack:
    children: dict[str, Child]
    ingress_url: str
    emulator_url: str
    prometheus_url: str
    http: httpx.Client
    traffic_at: float = 0.0

    def place_call(self, scenario: str, from_: str = "+14155550100") -> str:
        body = {"from": from_, "to": "+18005550100", "scenario": scenario}
        response = self.http.post(f"{self.emulator_url}/_emulator/calls", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["call_id"])

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.http.request(method, f"{self.ingress_url}{path}", headers=headers, **kwargs)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr})
        assert response.status_code == 200, f"{expr}: {response.text}"
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def alerts(self) -> dict[str, str]:
        """Alert name -> state (pending or firing) of the active alerts."""
        response = self.http.get(f"{self.prometheus_url}/api/v1/alerts")
        assert response.status_code == 200
        return {a["labels"]["alertname"]: a["state"] for a in response.json()["data"]["alerts"]}

    def steady_traffic(self, every_s: float = 1.0) -> None:
        """Place a call and a blocked call, and ask the admin API, at most every ``every_s``."""
        if time.monotonic() - self.traffic_at < every_s:
            return
        self.traffic_at = time.monotonic()
        self.place_call("quick-question")
        self.place_call("quick-question", from_=BLOCKED_CALLER)
        assert self.admin("GET", "/v1/calls").status_code == 200

    def check_alive(self) -> None:
        for child in self.children.values():
            assert child.alive(), f"{child.name} exited:\n{child.tail()}"


@pytest.fixture(scope="module")
def stack(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = tool("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus-stack")

    def flush() -> None:
        client = redis.Redis.from_url(redis_server)
        client.flushall()
        client.close()

    flush()
    scenarios = workdir / "scenarios"
    scenarios.mkdir()
    (scenarios / f"{ON_HOLD}.yaml").write_text(ON_HOLD_SCENARIO)
    ports = {name: free_port() for name in (*JOBS, "prometheus")}
    ingress_url = f"http://127.0.0.1:{ports['ingress']}"
    emulator_url = f"http://127.0.0.1:{ports['emulator']}"
    env = {
        "SWITCHBOARD_REDIS_URL": redis_server,
        "OPENAI_BASE_URL": f"{emulator_url}/v1",
        "OPENAI_API_KEY": "sk-prometheus-stack",
        "OPENAI_WEBHOOK_SECRET": SECRET,
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    argvs = {
        "ingress": ("ingress", "--host", "127.0.0.1", "--port", str(ports["ingress"])),
        "worker": ("worker", "--concurrency", "2", "--metrics-port", str(ports["worker"])),
        "runner": (
            *("runner", "--id", RUNNER_ID, "--metrics-port", str(ports["runner"])),
            *("--drain-grace", str(DRAIN_GRACE_S)),
        ),
        "emulator": (
            *("emulator", "--host", "127.0.0.1", "--port", str(ports["emulator"])),
            *("--webhook-url", f"{ingress_url}/webhooks/openai", "--time-scale", "0.05"),
            *("--scenario-dir", str(scenarios)),
        ),
    }
    rules_path = workdir / "alerts.yml"
    rules_path.write_text(yaml.safe_dump(shortened_rules("1s")))
    targets = {job: f"127.0.0.1:{ports[job]}" for job in JOBS}
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(local_config(targets, rules_path)))
    children: dict[str, Child] = {}
    with contextlib.ExitStack() as stop, httpx.Client(timeout=10.0) as http:
        stop.callback(flush)  # last: no queued task of this stack reaches a later worker
        for name, args in argvs.items():
            children[name] = spawn(name, switchboard_argv(*args), workdir, env=env)
            # Celery's cold shutdown: tasks still retrying a 503 are not waited for.
            stop.callback(
                children[name].stop, signal.SIGQUIT if name == "worker" else signal.SIGTERM
            )
        children["prometheus"] = spawn(
            "prometheus",
            [
                prometheus,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--log.level=warn",
            ],
            workdir,
        )
        stop.callback(children["prometheus"].stop)
        prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
        wait_until(http_ok(f"{prometheus_url}/-/ready"), 30.0, "prometheus", children["prometheus"])
        wait_until(http_ok(f"{ingress_url}/healthz"), 30.0, "ingress", children["ingress"])
        wait_until(http_ok(f"{emulator_url}/healthz"), 30.0, "emulator", children["emulator"])
        worker = children["worker"]
        wait_until(lambda: " ready." in worker.tail(200), 60.0, "celery worker", worker)
        yield Stack(children, ingress_url, emulator_url, prometheus_url, http)


def _targets_up(stack: Stack) -> bool:
    response = stack.http.get(f"{stack.prometheus_url}/api/v1/targets")
    active = response.json()["data"]["activeTargets"]
    return {t["labels"]["job"] for t in active if t["health"] == "up"} >= set(JOBS)


def _live_calls(stack: Stack) -> list[str]:
    response = stack.admin("GET", "/v1/calls")
    assert response.status_code == 200, response.text
    return [str(call["id"]) for call in response.json()["calls"] if call["state"] == "active"]


def _call_state(stack: Stack, call_id: str) -> str | None:
    response = stack.admin("GET", f"/v1/calls/{call_id}")
    return str(response.json()["state"]) if response.status_code == 200 else None


def _runner_value(stack: Stack, series: str) -> float | None:
    """The runner job's one sample of ``series`` in Prometheus, if it has one yet."""
    result = stack.query(f'{series}{{job="runner"}}')
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def _empty_queries(stack: Stack, queries: list[tuple[str, str, str]]) -> list[str]:
    empty = []
    for uid, title, expr in queries:
        result = stack.query(expr)
        values = [float(sample["value"][1]) for sample in result]
        if not values or all(math.isnan(v) for v in values):
            empty.append(f"{uid} / {title}: {expr}")
    return empty


def test_every_dashboard_query_returns_data_from_a_live_stack(stack: Stack) -> None:
    started = time.monotonic()
    wait_until(lambda: _targets_up(stack), 30.0, "all targets up in prometheus")
    # The long call outlasts the test; the others end within seconds.
    long_call = stack.place_call("long-call")
    for scenario in ("order-status", "quick-question", "transfer-to-human") * 2:
        stack.place_call(scenario)
    stack.place_call("quick-question", from_=BLOCKED_CALLER)
    bad = stack.http.post(f"{stack.ingress_url}/webhooks/openai", content=b"{}")
    assert bad.status_code == 400

    wait_until(lambda: long_call in _live_calls(stack), 30.0, "the long call live")

    def runner_holds_calls() -> bool:
        stack.steady_traffic()  # keeps calls coming while Prometheus catches up
        return bool(stack.query(f'switchboard_runner_calls{{runner="{RUNNER_ID}"}} > 0'))

    wait_until(runner_holds_calls, 20.0, "the runner's live calls in prometheus")
    said = stack.admin("POST", f"/v1/calls/{long_call}/say", json={"text": "One moment please."})
    assert said.status_code in (200, 202), said.text
    assert stack.admin("GET", "/v1/runners").status_code == 200

    queries = dashboards().all_queries()
    missing: list[str] = []

    def all_have_data() -> bool:
        stack.check_alive()
        # Steady traffic (one accepted, one rejected call and one admin request a second),
        # so rates over the last minutes stay above zero.
        stack.steady_traffic()
        missing[:] = _empty_queries(stack, queries)
        return not missing

    try:
        wait_until(all_have_data, 60.0, "data for every dashboard query")
    except TimeoutError:
        pytest.fail("queries without data:\n" + "\n".join(missing))
    assert stack.query("switchboard_calls_total")
    assert time.monotonic() - started < 90


def test_a_503_storm_fires_the_realtime_api_and_call_failure_alerts(stack: Stack) -> None:
    wait_until(lambda: _targets_up(stack), 30.0, "all targets up in prometheus")
    assert not {"SwitchboardRealtimeApiErrors", "SwitchboardCallFailureRate"} & set(stack.alerts())
    faults = stack.http.post(f"{stack.emulator_url}/_emulator/faults", json={"rest_5xx_rate": 1.0})
    assert faults.status_code == 200, faults.text
    try:

        def firing() -> bool:
            stack.check_alive()
            stack.steady_traffic(every_s=0.5)
            alerts = stack.alerts()
            return alerts.get("SwitchboardRealtimeApiErrors") == "firing" and alerts.get(
                "SwitchboardCallFailureRate"
            ) in ("pending", "firing")

        wait_until(firing, 45.0, "SwitchboardRealtimeApiErrors firing, calls failing")
    finally:
        stack.http.post(f"{stack.emulator_url}/_emulator/faults", json={"rest_5xx_rate": 0.0})
    errors = stack.query(
        'sum(rate(switchboard_rest_request_duration_seconds_count{status="503"}[1m]))'
    )
    assert errors
    assert float(errors[0]["value"][1]) > 0


def test_the_stack_reports_redis_reachable_and_no_runner_alert(stack: Stack) -> None:
    [up] = stack.query("switchboard_redis_up")
    assert up["value"][1] == "1"
    [alive] = stack.query('switchboard_runners{state="alive"}')
    assert alive["value"][1] == "1"
    assert "SwitchboardNoRunnerAlive" not in stack.alerts()


def test_an_operator_drain_shows_in_the_runner_metrics(stack: Stack) -> None:
    """Last of the module: the runner drains, and exits once its last call is hung up."""
    wait_until(lambda: _targets_up(stack), 30.0, "all targets up in prometheus")
    assert _runner_value(stack, "switchboard_runner_drains_total") == 0
    assert _runner_value(stack, "switchboard_runner_draining") == 0
    call_id = stack.place_call(ON_HOLD)
    wait_until(lambda: _call_state(stack, call_id) == "active", 30.0, "the call on hold live")

    drained = stack.admin("POST", f"/v1/runners/{RUNNER_ID}/drain")
    assert drained.status_code == 202, drained.text
    try:

        def drain_seen() -> bool:
            stack.check_alive()
            draining = _runner_value(stack, "switchboard_runner_draining")
            return draining == 1 and _runner_value(stack, "switchboard_runner_drains_total") == 1

        wait_until(drain_seen, DRAIN_GRACE_S, "the drain in prometheus")
    finally:
        # Ours and any call still live from the tests before: a drained runner with no
        # other runner to take its calls keeps them until they end.
        live = _live_calls(stack)
        for live_id in live:
            stack.admin("POST", f"/v1/calls/{live_id}/hangup")
    assert call_id in live
    runner = stack.children["runner"]
    wait_until(lambda: not runner.alive(), DRAIN_GRACE_S, "the drained runner exits")
    assert runner.proc.returncode == 0, runner.tail()
