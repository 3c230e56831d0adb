"""Switchboard's Grafana dashboards as code.

``python deploy/grafana/dashboards.py`` writes one JSON file per dashboard into
``deploy/grafana/dashboards/``, which Grafana loads through the provisioning in
``deploy/grafana/provisioning/``. The JSON is generated, never edited by hand; a test
checks it matches this file, that every query names only metrics Switchboard exports
(``shared.metrics``), and that every query returns data from a real stack.

Cluster-wide series (calls, cost, tokens, queues, runners) come from every ingress
replica alike, so they are taken with ``max without (instance)`` before summing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A time series (or a single stat) with its queries."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    stat: bool = False
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def cluster(expr: str) -> str:
    """A cluster-wide series, deduplicated across ingress replicas."""
    return f"max without (instance) ({expr})"


def quantiles(metric: str, by: str = "", window: str = "5m", qs: tuple[float, ...] = (0.5, 0.99)):
    """Queries for the quantiles ``qs`` of a histogram, optionally per label ``by``."""
    group = f"le, {by}" if by else "le"
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{window}])))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in qs
    )


SPEND_RATE = f"sum({cluster('rate(switchboard_cost_usd_total[5m])')})"
OUTCOME_RATE = 'rate(switchboard_calls_total{outcome=~"%s"}[5m])'
OUTCOMES_RATE = cluster("rate(switchboard_calls_total[5m])")

OVERVIEW = Dashboard(
    "switchboard-overview",
    "Switchboard: call center",
    "Concurrency, outcomes, setup and turn latency, cost burn and cost per call.",
    (
        Panel(
            "Live calls",
            (Query(f"sum({cluster('switchboard_calls_active')})"),),
            stat=True,
            width=6,
        ),
        Panel(
            "Calls per minute",
            (Query(f"sum({cluster(OUTCOME_RATE % 'accepted|rejected|failed')}) * 60"),),
            stat=True,
            width=6,
        ),
        Panel(
            "Call setup p99",
            quantiles("switchboard_call_setup_latency_seconds", qs=(0.99,)),
            unit="s",
            stat=True,
            width=6,
        ),
        Panel(
            "Spend per hour", (Query(f"{SPEND_RATE} * 3600"),), "currencyUSD", stat=True, width=6
        ),
        Panel(
            "Live calls by profile",
            (
                Query(
                    f"sum by (profile) ({cluster('switchboard_calls_active')})",
                    "{{profile}}",
                ),
            ),
            description="Calls not routed yet have no profile.",
        ),
        Panel(
            "Live calls by state",
            (Query(f"sum by (state) ({cluster('switchboard_calls_active')})", "{{state}}"),),
        ),
        Panel(
            "Call outcomes per minute",
            (
                Query(
                    f"sum by (outcome, reason) ({OUTCOMES_RATE}) * 60",
                    "{{outcome}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Call setup latency (webhook in -> accept sent)",
            quantiles("switchboard_call_setup_latency_seconds"),
            "s",
            "Target: p99 under 20 ms.",
        ),
        Panel(
            "Calls set up within 20 ms (SLO 99 %)",
            (
                Query(
                    "sum(rate(switchboard_call_setup_latency_seconds_bucket"
                    '{le="0.02"}[5m])) / '
                    "sum(rate(switchboard_call_setup_latency_seconds_count[5m]))",
                    "within 20 ms",
                ),
            ),
            "percentunit",
        ),
        Panel(
            "Turn latency (caller stops -> agent answers)",
            quantiles("switchboard_turn_latency_seconds", qs=(0.5, 0.95, 0.99)),
            "s",
        ),
        Panel(
            "Cost burn by profile",
            (
                Query(
                    "sum by (profile) ("
                    + cluster("rate(switchboard_cost_usd_total[5m])")
                    + ") * 3600",
                    "{{profile}}",
                ),
            ),
            "currencyUSD",
            "USD per hour at the last 5 minutes' rate.",
        ),
        Panel(
            "Cost per call",
            (
                *quantiles("switchboard_call_cost_usd", window="15m", qs=(0.5, 0.95)),
                Query(
                    "sum(rate(switchboard_call_cost_usd_sum[15m])) / "
                    "sum(rate(switchboard_call_cost_usd_count[15m]))",
                    "mean",
                ),
            ),
            "currencyUSD",
        ),
        Panel(
            "Call duration",
            quantiles("switchboard_call_duration_seconds", window="15m", qs=(0.5, 0.95)),
            "s",
        ),
        Panel(
            "Rejected and failed calls",
            (
                Query(
                    f"sum({cluster(OUTCOME_RATE % 'rejected|failed')}) / "
                    f"sum({cluster(OUTCOME_RATE % 'accepted|rejected|failed')})",
                    "share of incoming calls",
                ),
            ),
            "percentunit",
        ),
    ),
)

RUNNERS = Dashboard(
    "switchboard-runners",
    "Switchboard: session runners",
    "Load and capacity, event-loop lag, sideband events, reconnects, failovers and drains.",
    (
        Panel(
            "Runners by state",
            (Query(f"sum by (state) ({cluster('switchboard_runners')})", "{{state}}"),),
            description="alive: taking calls; draining: handing calls over; dead: no heartbeat.",
        ),
        Panel(
            "Pool utilisation",
            (
                Query(
                    f"sum({cluster('switchboard_runner_pool_calls')}) / "
                    f"sum({cluster('switchboard_runner_pool_capacity_calls')})",
                    "calls / capacity",
                ),
            ),
            "percentunit",
        ),
        Panel(
            "Calls per runner",
            (
                Query("switchboard_runner_calls", "{{runner}}"),
                Query("switchboard_runner_capacity_calls", "capacity {{runner}}"),
            ),
        ),
        Panel(
            "Event-loop lag p99",
            quantiles("switchboard_runner_event_loop_lag_seconds", by="instance", qs=(0.99,)),
            "s",
            "Target: under 10 ms at 2,000 calls per runner.",
        ),
        Panel(
            "Sideband events per second",
            (
                Query(
                    "sum by (type) (rate(switchboard_session_events_total[5m]))",
                    "{{type}}",
                ),
            ),
        ),
        Panel(
            "Attaches: first, reconnects, failovers",
            (
                Query(
                    "sum by (kind) (rate(switchboard_session_attaches_total[5m])) * 60",
                    "{{kind}}",
                ),
            ),
            description="Per minute. reattach: after a dropped socket; takeover: a call taken"
            " over from a dead or draining runner.",
        ),
        Panel(
            "Drains and hand-overs",
            (
                Query("sum(switchboard_runner_draining)", "draining now"),
                Query("sum(increase(switchboard_runner_drains_total[1h]))", "drains (1h)"),
                Query("sum(increase(switchboard_session_handovers_total[1h]))", "hand-overs (1h)"),
                Query(
                    "sum(increase(switchboard_session_leases_lost_total[1h]))",
                    "leases lost (1h)",
                ),
            ),
        ),
        Panel(
            "Calls ended per minute by reason",
            (
                Query(
                    "sum by (reason) (rate(switchboard_session_calls_ended_total[5m])) * 60",
                    "{{reason}}",
                ),
            ),
        ),
        Panel(
            "Tool and command latency p95",
            (
                Query(
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(switchboard_tool_latency_seconds_bucket[15m])))",
                    "tool",
                ),
                Query(
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(switchboard_command_latency_seconds_bucket[15m])))",
                    "command",
                ),
            ),
            "s",
        ),
        Panel(
            "Session errors per minute",
            (
                Query("sum(rate(switchboard_tool_timeouts_total[5m])) * 60", "tool timeouts"),
                Query("sum(rate(switchboard_usage_rejected_total[5m])) * 60", "usage unpriced"),
                Query(
                    "sum(rate(switchboard_realtime_server_errors_total[5m])) * 60",
                    "server error events",
                ),
            ),
        ),
    ),
)

COST = Dashboard(
    "switchboard-cost",
    "Switchboard: cost",
    "Spend by profile, model and billing component; tokens; projected daily spend.",
    (
        Panel(
            "Spend, all time",
            (Query(f"sum({cluster('switchboard_cost_usd_total')})"),),
            "currencyUSD",
            stat=True,
            width=8,
        ),
        Panel(
            "Projected daily spend",
            (
                Query(
                    f"sum({cluster('rate(switchboard_cost_usd_total[1h])')}) * 86400",
                    "projected",
                ),
            ),
            "currencyUSD",
            "At the last hour's rate.",
            stat=True,
            width=8,
        ),
        Panel(
            "Daily budget",
            (Query("switchboard:cost_budget_usd_per_day", "budget"),),
            "currencyUSD",
            "Configured in deploy/prometheus/alerts.yml.",
            stat=True,
            width=8,
        ),
        Panel(
            "Spend per hour by profile",
            (
                Query(
                    f"sum by (profile) ({cluster('rate(switchboard_cost_usd_total[5m])')}) * 3600",
                    "{{profile}}",
                ),
            ),
            "currencyUSD",
        ),
        Panel(
            "Spend per hour by model",
            (
                Query(
                    f"sum by (model) ({cluster('rate(switchboard_cost_usd_total[5m])')}) * 3600",
                    "{{model}}",
                ),
            ),
            "currencyUSD",
        ),
        Panel(
            "Spend per hour by component",
            (
                Query(
                    "sum by (component) ("
                    + cluster("rate(switchboard_cost_usd_total[5m])")
                    + ") * 3600",
                    "{{component}}",
                ),
            ),
            "currencyUSD",
        ),
        Panel(
            "Tokens per second by component",
            (
                Query(
                    f"sum by (component) ({cluster('rate(switchboard_tokens_total[5m])')})",
                    "{{component}}",
                ),
            ),
        ),
        Panel(
            "Responses per minute by model",
            (
                Query(
                    f"sum by (model) ({cluster('rate(switchboard_responses_total[5m])')}) * 60",
                    "{{model}}",
                ),
            ),
        ),
        Panel(
            "Cost per call and per response",
            (
                *quantiles("switchboard_call_cost_usd", window="15m", qs=(0.5, 0.95)),
                Query(
                    f"sum({cluster('rate(switchboard_cost_usd_total[15m])')}) / "
                    f"sum({cluster('rate(switchboard_responses_total[15m])')})",
                    "per response",
                ),
            ),
            "currencyUSD",
        ),
    ),
)

INGRESS = Dashboard(
    "switchboard-ingress",
    "Switchboard: ingress and queues",
    "Webhooks, the admin API, Celery queues and tasks, admission, the Realtime REST API.",
    (
        Panel(
            "Webhooks per second by result",
            (Query("sum by (result) (rate(switchboard_webhooks_total[5m]))", "{{result}}"),),
        ),
        Panel(
            "Refused webhooks per second",
            (
                Query(
                    "sum by (result, reason) (rate(switchboard_webhooks_total"
                    '{result=~"invalid_signature|invalid|too_large|unavailable"}[5m]))',
                    "{{result}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Webhook handling time",
            quantiles("switchboard_webhook_duration_seconds"),
            "s",
            "Target: p99 under 10 ms.",
        ),
        Panel(
            "Admin requests per second",
            (
                Query(
                    "sum by (route, status) (rate(switchboard_admin_requests_total[5m]))",
                    "{{route}} {{status}}",
                ),
            ),
        ),
        Panel(
            "Admin latency p99 by route",
            quantiles("switchboard_admin_request_duration_seconds", by="route", qs=(0.99,)),
            "s",
        ),
        Panel(
            "Queue depths",
            (Query("max by (queue) (switchboard_queue_length)", "{{queue}}"),),
            description="Celery queues, and pending_calls: accepted calls no runner took yet.",
        ),
        Panel(
            "Admission slots used by profile",
            (
                Query(
                    f"sum by (profile) ({cluster('switchboard_admission_slots_used')})",
                    "{{profile}}",
                ),
            ),
        ),
        Panel(
            "Celery tasks per second",
            (
                Query(
                    "sum by (task, state) (rate(switchboard_tasks_total[5m]))",
                    "{{task}} {{state}}",
                ),
            ),
        ),
        Panel(
            "Task run time p95",
            quantiles("switchboard_task_duration_seconds", by="task", qs=(0.95,)),
            "s",
        ),
        Panel(
            "Realtime REST latency p99",
            quantiles("switchboard_rest_request_duration_seconds", by="endpoint", qs=(0.99,)),
            "s",
        ),
        Panel(
            "Realtime REST answers per second",
            (
                Query(
                    "sum by (endpoint, status) "
                    "(rate(switchboard_rest_request_duration_seconds_count[5m]))",
                    "{{endpoint}} {{status}}",
                ),
            ),
        ),
        Panel(
            "Redis and scrape targets",
            (
                Query("min(switchboard_redis_up)", "redis reachable"),
                Query("max(switchboard_cluster_scrape_duration_seconds)", "cluster view read (s)"),
                Query(
                    'sum by (job) (up{job=~"ingress|worker|runner|emulator|grafana"})', "up {{job}}"
                ),
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, RUNNERS, COST, INGRESS)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, object]:
    height = 4 if panel.stat else 8
    body: dict[str, object] = {
        "id": panel_id,
        "type": "stat" if panel.stat else "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": True,
            }
            for i, query in enumerate(panel.queries)
        ],
    }
    if panel.stat:
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"}
    else:
        body["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    return body


def dashboard_json(dashboard: Dashboard) -> dict[str, object]:
    """The Grafana JSON model of ``dashboard``; panels flow left to right, 24 columns wide."""
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, 4 if panel.stat else 8)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["switchboard"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n"
        for d in DASHBOARDS
    }


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) of every query."""
    return [(d.uid, p.title, q.expr) for d in DASHBOARDS for p in d.panels for q in p.queries]


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
