"""``GET /metrics`` of the emulator: its ground truth and fault settings for Prometheus.

Rendered from the context at scrape time, so nothing on the API's hot path changes:
calls placed and their current states, responses and tokens billed, and the fault
rates in force (a demo dashboard or a test can see a 503 storm being injected). The
emulator stands in for OpenAI, so its names say ``emulator`` and no Switchboard
process exports them.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from emulator.context import EmulatorContext

FAULT_RATES = (
    "rest_5xx_rate",
    "rest_429_rate",
    "ws_drop_rate",
    "webhook_duplicate_rate",
    "malformed_event_rate",
)
NAMES = (
    "switchboard_emulator_calls_placed_total",
    "switchboard_emulator_calls",
    "switchboard_emulator_responses_total",
    "switchboard_emulator_tokens_total",
    "switchboard_emulator_fault_rate",
)


class _Truth:
    def __init__(self, ctx: EmulatorContext) -> None:
        self._ctx = ctx

    def collect(self) -> Iterable[Metric]:
        ledger = self._ctx.registry.ledger()
        placed = CounterMetricFamily(
            "switchboard_emulator_calls_placed", "Calls the emulator placed."
        )
        placed.add_metric([], ledger["calls"])
        states = GaugeMetricFamily(
            "switchboard_emulator_calls", "Emulated calls by current state.", labels=["state"]
        )
        for state, n in sorted(ledger["by_state"].items()):
            states.add_metric([state], n)
        responses = CounterMetricFamily(
            "switchboard_emulator_responses", "Model responses the emulator produced."
        )
        responses.add_metric([], ledger["responses"])
        tokens = CounterMetricFamily(
            "switchboard_emulator_tokens",
            "Tokens billed by the emulator, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(ledger["usage"].items()):
            if isinstance(n, int):
                tokens.add_metric([kind], n)
        faults = GaugeMetricFamily(
            "switchboard_emulator_fault_rate", "Injected fault rates in force.", labels=["fault"]
        )
        for name in FAULT_RATES:
            faults.add_metric([name], float(getattr(self._ctx.faults, name)))
        return [placed, states, responses, tokens, faults]


async def metrics(request: Request) -> Response:
    ctx: EmulatorContext = request.app.state.ctx
    return Response(generate_latest(_Truth(ctx)), media_type=CONTENT_TYPE_LATEST)


ROUTES: list[BaseRoute] = [Route("/metrics", metrics, methods=["GET"])]
