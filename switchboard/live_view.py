"""The live terminal view of ``switchboard up --demo``.

Every tick it reads the cluster (``switchboard.cluster_stats``), the runners'
turn-latency and the workers' call-setup histograms (their ``/metrics``), feeds a
``ClusterWindow`` and shows:
active calls, calls per minute by outcome, call-setup and turn latency p50/p99, cost
so far and the burn rate in USD/hour, and each runner's load. On a terminal it
redraws in place (rich ``Live``); otherwise it prints one plain line every
``PLAIN_EVERY_S`` so logs stay readable. A reading that fails (Redis busy, a runner
restarting) is skipped, never fatal: the view must not take the stack down.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shared.policy_file import PolicySource
from shared.settings import Settings
from shared.store import StoreUnavailable
from switchboard.cluster_stats import ClusterStats, percentile, read_stats
from switchboard.cluster_window import ClusterWindow, Reading, histogram_quantile
from switchboard.output import duration, usd

log = logging.getLogger(__name__)

PLAIN_EVERY_S = 10.0
TURN_HISTOGRAM = "switchboard_turn_latency_seconds"
SETUP_HISTOGRAM = "switchboard_call_setup_latency_seconds"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


def histogram_buckets(metrics_urls: Sequence[str], name: str) -> list[tuple[float, float]]:
    """Histogram ``name`` of every endpoint, summed: (upper bound, cumulative count)."""
    summed: dict[float, float] = {}
    for url in metrics_urls:
        try:
            text = httpx.get(url, timeout=0.5).text
        except httpx.HTTPError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name != name:
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    summed[bound] = summed.get(bound, 0.0) + sample.value
    return sorted(summed.items())


Quantiles = tuple[float | None, float | None]


@dataclass(frozen=True)
class _Latency:
    """p50 and p99 of call setup and of turns, in seconds (None: nothing seen yet)."""

    setup_s: Quantiles
    turn_s: Quantiles


def _quantiles(buckets: list[tuple[float, float]]) -> Quantiles:
    return histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)


class LiveView:
    """Reads the cluster each tick and shows it on a terminal or as plain lines."""

    def __init__(
        self,
        client: redis.Redis,
        runner_metrics: Sequence[str],
        console: Console,
        *,
        plain: bool,
        worker_metrics: Sequence[str] = (),
    ) -> None:
        self._client = client
        self._runner_metrics = list(runner_metrics)
        self._worker_metrics = list(worker_metrics)
        self._console = console
        self._plain = plain
        self._prices = PolicySource(Settings().config).current().prices
        self.window = ClusterWindow()
        self._live: Live | None = None
        self._last_plain = 0.0
        if not plain:
            self._live = Live(console=console, auto_refresh=False, transient=False)
            self._live.start()

    def tick(self) -> None:
        """Take one reading and show it."""
        try:
            stats = read_stats(self._client, self._prices)
        except (StoreUnavailable, redis.RedisError, OSError, ValueError) as err:
            log.debug("live view: reading skipped: %s", err)
            return
        outcomes: dict[str, int] = {}
        for (outcome, _), count in stats.totals.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        reading = Reading(stats.at, outcomes, stats.totals.cost_usd)
        self.window.add(reading, stats.setup_latencies_s)
        turn = _quantiles(histogram_buckets(self._runner_metrics, TURN_HISTOGRAM))
        # The workers time every call's setup; the records of live calls are the fallback.
        setup = _quantiles(histogram_buckets(self._worker_metrics, SETUP_HISTOGRAM))
        if setup == (None, None):
            seen = self.window.setup_latencies_s()
            setup = (percentile(seen, 0.5), percentile(seen, 0.99))
        latency = _Latency(setup, turn)
        if self._live is not None:
            self._live.update(self.render(stats, latency), refresh=True)
        elif stats.at - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = stats.at
            print(self.line(stats, latency), flush=True)

    def _summary(self, stats: ClusterStats, latency: _Latency) -> list[tuple[str, str]]:
        setup, turn = latency.setup_s, latency.turn_s
        burn = self.window.burn_usd_per_hour()
        rates = self.window.per_minute()
        cost = usd(stats.totals.cost_usd) + (
            f", burning ${burn:,.2f}/h" if burn is not None else ""
        )
        return [
            ("calls", f"{len(stats.live_calls)} active"),
            ("calls/min", ", ".join(f"{k} {v:.1f}" for k, v in rates.items()) or "-"),
            ("setup", f"p50 {_ms(setup[0])} p99 {_ms(setup[1])}"),
            ("turn", f"p50 {_ms(turn[0])} p99 {_ms(turn[1])}"),
            ("cost", cost),
        ]

    def line(self, stats: ClusterStats, latency: _Latency) -> str:
        """The plain one-line form."""
        runners = " ".join(f"{r.runner_id}={r.load}/{r.capacity}" for r in stats.alive_runners())
        parts = [f"{label} {value}" for label, value in self._summary(stats, latency)]
        uptime = duration(self.window.uptime_s())
        return f"switchboard {uptime}: " + " | ".join(parts) + f" | runners {runners or '-'}"

    def render(self, stats: ClusterStats, latency: _Latency) -> Group:
        """The terminal form: a summary and one row per runner."""
        summary = Table.grid(padding=(0, 2))
        summary.add_column(style="bold")
        summary.add_column()
        for label, value in self._summary(stats, latency):
            summary.add_row(label, value)
        runners = Table(title="runners", title_justify="left", show_edge=False)
        for name in ("runner", "load", "", "heartbeat"):
            runners.add_column(name)
        for entry in stats.runners:
            share = entry.load / entry.capacity if entry.capacity else 0.0
            filled = min(20, round(share * 20))
            status = " draining" if entry.draining else ""
            runners.add_row(
                entry.runner_id + status,
                f"{entry.load}/{entry.capacity}",
                "#" * filled + "." * (20 - filled),
                duration(max(0.0, stats.at - entry.heartbeat_at)),
            )
        title = Text(f"switchboard demo, up {duration(self.window.uptime_s())}", style="bold")
        return Group(title, summary, runners, Text("Ctrl-C stops everything.", style="dim"))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._client.close()


def open_view(
    redis_url: str, runner_metrics: Sequence[str] = (), worker_metrics: Sequence[str] = ()
) -> LiveView:
    """A view on ``redis_url``: redrawn in place on a terminal, plain lines otherwise."""
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=1.0
    )
    console = Console()
    plain = not sys.stdout.isatty()
    return LiveView(client, runner_metrics, console, plain=plain, worker_metrics=worker_metrics)
