"""The deployment files agree with the code: compose, Prometheus, alert rules, dashboards.

``promtool`` (``make prometheus``) checks the config and the rules and runs the rules'
unit tests; the dashboards are generated from ``deploy/grafana/dashboards.py`` and
may name only metrics that ``shared.metrics`` declares. The compose file is resolved
as ``docker compose`` would (``deploy_files.resolved_compose``) and each service's
command parsed by the ``switchboard`` CLI itself.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from emulator import metrics as emulator_metrics
from ingress.verify import signing_key
from ingress.webhooks import WEBHOOK_PATH
from shared import metrics
from tests.observability.deploy_files import (
    ALERTS,
    ALERTS_TEST,
    COMPOSE,
    DEMO_ENV,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    SWITCHBOARD_IMAGE,
    ComposeError,
    alert_rules,
    command_params,
    dashboards,
    interpolate,
    load_yaml,
    metric_names,
    read_env_file,
    recorded_names,
    resolved_compose,
    switchboard_cli,
    tool,
)
from tests.support.procs import REPO

PRODUCTION_ENV = {
    "OPENAI_API_KEY": "sk-production",
    "OPENAI_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8,
}
"""What ``docker compose up`` needs against the real API (placeholders)."""


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


def switchboard_services() -> dict[str, Any]:
    return {
        name: service
        for name, service in compose_services().items()
        if service.get("image") == SWITCHBOARD_IMAGE
    }


# Metric names ------------------------------------------------------------------------


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, spec in metrics.CATALOGUE.items():
        assert name.startswith("switchboard_"), name
        assert not name.endswith("_total"), f"{name}: counters are declared without _total"
        if spec.kind == "histogram":
            assert name.endswith(("_seconds", "_usd")), f"{name}: histograms carry a unit"
        if any(word in name for word in ("duration", "latency", "lag")):
            assert name.endswith("_seconds"), name
        if "cost" in name:
            assert name.endswith(("_usd", "_usd_total")), name
        assert "le" not in spec.labels
        assert spec.buckets == tuple(sorted(spec.buckets)), f"{name}: buckets out of order"
    assert metrics.CALL_SETUP.buckets[0] <= 0.001, "setup latency is a millisecond affair"
    assert 0.02 in metrics.CALL_SETUP.buckets, "the setup SLO bound must be a bucket edge"
    assert metrics.CALL_DURATION.buckets[-1] >= 3600
    assert metrics.CALL_COST.buckets[0] <= 0.001


def test_dashboard_and_alert_queries_name_only_exported_metrics() -> None:
    exported = metrics.series_names() | recorded_names()
    used: set[str] = set()
    for uid, title, expr in dashboards().all_queries():
        named = metric_names(expr)
        assert named or "up{" in expr, f"{uid} / {title}: no metric in {expr!r}"
        assert named <= exported, f"{uid} / {title}: unknown {sorted(named - exported)}"
        used |= named
    for rule in alert_rules():
        named = metric_names(rule["expr"])
        assert named <= exported, f"{rule}: unknown {sorted(named - exported)}"
        used |= named
    # Every metric we export is shown somewhere (histograms through any of their series).
    shown = {
        name
        for name, spec in metrics.CATALOGUE.items()
        if any(series in used for series in spec.series)
    }
    assert shown == set(metrics.CATALOGUE), f"not shown: {sorted(set(metrics.CATALOGUE) - shown)}"
    assert not {n for n in used if n.startswith("switchboard_emulator")}, "demo-only metrics"


def test_emulator_metric_names_do_not_collide_with_ours() -> None:
    assert not set(emulator_metrics.NAMES) & metrics.series_names()


# Dashboards --------------------------------------------------------------------------


def test_the_dashboards_on_disk_are_the_generated_ones() -> None:
    rendered = dashboards().rendered()
    on_disk = {p.name: p.read_text() for p in (GRAFANA_DIR / "dashboards").glob("*.json")}
    assert on_disk == rendered, "run `python deploy/grafana/dashboards.py`"
    uids = [json.loads(text)["uid"] for text in rendered.values()]
    assert sorted(uids) == sorted(set(uids))
    titles = {json.loads(text)["title"] for text in rendered.values()}
    assert len(titles) == 4


REQUIRED_PANELS: dict[str, dict[str, tuple[str, str, str]]] = {
    # dashboard uid: {what it must show: (panel title, a series it queries, and how)}
    "switchboard-overview": {
        "concurrency": ("Live calls by profile", "switchboard_calls_active", "by (profile)"),
        "outcomes": ("Call outcomes per minute", "switchboard_calls_total", "by (outcome, reason)"),
        "setup latency": (
            "Call setup latency (webhook in -> accept sent)",
            "switchboard_call_setup_latency_seconds_bucket",
            "histogram_quantile(0.99,",
        ),
        "turn latency": (
            "Turn latency (caller stops -> agent answers)",
            "switchboard_turn_latency_seconds_bucket",
            "histogram_quantile(0.99,",
        ),
        "cost burn": ("Cost burn by profile", "switchboard_cost_usd_total", "rate("),
        "cost per call": (
            "Cost per call",
            "switchboard_call_cost_usd_bucket",
            "histogram_quantile",
        ),
    },
    "switchboard-runners": {
        "load": ("Calls per runner", "switchboard_runner_calls", "switchboard_runner_calls"),
        "pool load": ("Pool utilisation", "switchboard_runner_pool_calls", " / "),
        "loop lag": (
            "Event-loop lag p99",
            "switchboard_runner_event_loop_lag_seconds_bucket",
            "histogram_quantile(0.99,",
        ),
        "failovers": (
            "Attaches: first, reconnects, failovers",
            "switchboard_session_attaches_total",
            "by (kind)",
        ),
        "drains": ("Drains and hand-overs", "switchboard_runner_drains_total", "increase("),
        "draining now": ("Drains and hand-overs", "switchboard_runner_draining", "sum("),
        "hand-overs": ("Drains and hand-overs", "switchboard_session_handovers_total", "increase("),
    },
    "switchboard-cost": {
        "by profile": ("Spend per hour by profile", "switchboard_cost_usd_total", "by (profile)"),
        "by model": ("Spend per hour by model", "switchboard_cost_usd_total", "by (model)"),
        "by component": (
            "Spend per hour by component",
            "switchboard_cost_usd_total",
            "by (component)",
        ),
        "projected daily spend": ("Projected daily spend", "switchboard_cost_usd_total", "86400"),
    },
    "switchboard-ingress": {
        "webhooks": ("Webhooks per second by result", "switchboard_webhooks_total", "by (result)"),
        "webhook latency": (
            "Webhook handling time",
            "switchboard_webhook_duration_seconds_bucket",
            "histogram_quantile",
        ),
        "admin API": (
            "Admin requests per second",
            "switchboard_admin_requests_total",
            "by (route, status)",
        ),
        "queues": ("Queue depths", "switchboard_queue_length", "by (queue)"),
        "tasks": ("Celery tasks per second", "switchboard_tasks_total", "by (task, state)"),
        "admission": (
            "Admission slots used by profile",
            "switchboard_admission_slots_used",
            "by (profile)",
        ),
    },
}


def test_each_dashboard_has_its_required_panels_on_exported_metrics() -> None:
    exported = metrics.series_names() | recorded_names()
    boards = {board.uid: board for board in dashboards().DASHBOARDS}
    assert set(boards) == set(REQUIRED_PANELS)
    for uid, required in REQUIRED_PANELS.items():
        panels = {panel.title: panel for panel in boards[uid].panels}
        for need, (title, series, how) in required.items():
            assert title in panels, f"{uid}: no panel {title!r} for {need}"
            exprs = [query.expr for query in panels[title].queries]
            assert any(series in metric_names(expr) and how in expr for expr in exprs), (
                f"{uid} / {title} ({need}): no query of {series} with {how!r} in {exprs}"
            )
        for panel in boards[uid].panels:
            for query in panel.queries:
                named = metric_names(query.expr)
                assert named <= exported, f"{uid} / {panel.title}: {sorted(named - exported)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = dashboards().all_queries()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, _, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_provisioning_points_at_the_dashboards_and_the_datasource() -> None:
    grafana = compose_services()["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if ":" in volume)
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider_file = GRAFANA_DIR / "provisioning" / "dashboards" / "switchboard.yml"
    [provider] = load_yaml(provider_file)["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    [source] = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["uid"] == dashboards().DATASOURCE["uid"]
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose_services()


# Prometheus --------------------------------------------------------------------------


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    fires, quiet = set(), set()
    for case in load_yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == fires, f"never seen firing: {sorted(alerts - fires)}"
    assert alerts == quiet, f"never seen quiet: {sorted(alerts - quiet)}"
    required = {
        "SwitchboardCallSetupSLOFastBurn",
        "SwitchboardCallFailureRate",
        "SwitchboardCallRejectRate",
        "SwitchboardCostBurnOverBudget",
        "SwitchboardRunnerSaturation",
        "SwitchboardNoRunnerAlive",
        "SwitchboardWebhookSignatureFailures",
        "SwitchboardRedisUnreachable",
        "SwitchboardRealtimeApiErrors",
    }
    assert required <= alerts


UNSCRAPED = {
    # Redis serves no /metrics; the ingress's cluster view reports whether it can read
    # Redis (switchboard_redis_up, alert SwitchboardRedisUnreachable) instead.
    "redis": "switchboard_redis_up",
}
"""Compose services Prometheus does not scrape, each with the series that stands in."""


def _served_port(service: dict[str, Any]) -> int:
    """The port a service serves its metrics on, from its parsed command or its ports."""
    if service.get("image") == SWITCHBOARD_IMAGE:
        params = command_params(service["command"])
        return int(params.get("metrics_port") or params["port"])
    [mapping] = service["ports"]
    return int(str(mapping).rsplit(":", 1)[-1])


def test_prometheus_scrapes_every_compose_service_on_the_port_it_serves() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    services = compose_services()
    assert set(UNSCRAPED) <= set(services)
    assert set(jobs) == set(services) - set(UNSCRAPED), "one job per scraped service"
    for standin in UNSCRAPED.values():
        assert standin in metrics.series_names()
    for name, service in services.items():
        if name in UNSCRAPED:
            continue
        port = _served_port(service)
        job = jobs[name]
        if "dns_sd_configs" in job:
            # Every replica of a scaled service is found by its compose name.
            [discovery] = job["dns_sd_configs"]
            assert discovery["names"] == [name]
            assert (discovery["type"], discovery["port"]) == ("A", port), name
        else:
            [static] = job["static_configs"]
            host = "localhost" if name == "prometheus" else name
            assert static["targets"] == [f"{host}:{port}"], name


# Compose -----------------------------------------------------------------------------


def test_compose_runs_every_service_and_builds_one_image_from_the_deploy_dockerfile() -> None:
    services = compose_services()
    assert set(services) == {
        "redis",
        "ingress",
        "worker",
        "runner",
        "prometheus",
        "grafana",
        "emulator",
    }
    switchboard = switchboard_services()
    assert set(switchboard) == {"ingress", "worker", "runner", "emulator"}
    for name, service in switchboard.items():
        build = service["build"]
        assert build["dockerfile"] == "deploy/Dockerfile", name
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    assert "healthcheck" in services["redis"]
    # Each command is the arguments of the image's `switchboard` entry point.
    assert 'ENTRYPOINT ["switchboard"]' in (REPO / "deploy" / "Dockerfile").read_text()
    assert services["emulator"]["profiles"] == ["demo"]
    assert not any(
        service.get("profiles") for name, service in services.items() if name != "emulator"
    )


def test_the_runner_scales() -> None:
    runner = compose_services()["runner"]
    # A fixed host port or container name would stop a second replica from starting.
    assert "ports" not in runner
    assert "container_name" not in runner
    assert runner["deploy"]["replicas"] >= 2


@pytest.mark.parametrize("service", sorted(switchboard_services()))
def test_compose_commands_parse_as_switchboard_commands(service: str) -> None:
    command = switchboard_services()[service]["command"]
    assert isinstance(command, list)
    assert all(isinstance(arg, str) for arg in command), f"{service}: quote every argument"
    params = command_params(command)
    if service in ("ingress", "emulator"):
        assert params["host"] == "0.0.0.0", f"{service} must listen beyond the container"


@pytest.mark.parametrize(
    "argv",
    [
        ["runner", "--metrics-port", "ninety"],
        ["runner", "--metrics-port", "70000"],
        ["runner", "--lag-sample", "0"],
        ["worker", "--metrics-prot", "9100"],
        ["ingres", "--port", "8000"],
        ["runners", "drain"],
        ["emulator", "--calls-per-second", "-1"],
    ],
)
def test_a_bad_command_fails_to_parse(argv: list[str]) -> None:
    with pytest.raises(typer.TyperException):
        command_params(argv)


# The demo profile ---------------------------------------------------------------------


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or {"http": 80, "https": 443}[parts.scheme]


def test_the_demo_points_every_service_at_the_emulator() -> None:
    services = resolved_compose(read_env_file(DEMO_ENV), profiles=["demo"])
    emulator, ingress = services["emulator"], services["ingress"]
    emulator_params = command_params(emulator["command"])
    ingress_params = command_params(ingress["command"])
    for name, service in services.items():
        if service.get("image") != SWITCHBOARD_IMAGE:
            continue
        base = urlsplit(service["environment"]["OPENAI_BASE_URL"])
        assert (base.scheme, base.hostname, base.path) == ("http", "emulator", "/v1"), name
        assert _url_port(base.geturl()) == emulator_params["port"], name
        assert service["environment"]["OPENAI_API_KEY"], name
    # The emulator's webhooks reach the ingress, signed with the secret it verifies.
    webhook = urlsplit(emulator_params["webhook_url"])
    assert (webhook.hostname, webhook.path) == ("ingress", WEBHOOK_PATH)
    assert _url_port(emulator_params["webhook_url"]) == ingress_params["port"]
    secret = ingress["environment"]["OPENAI_WEBHOOK_SECRET"]
    signing_key(secret)  # the ingress refuses to start with a secret it cannot use
    assert _option_envvar("emulator", "webhook_secret") == "OPENAI_WEBHOOK_SECRET"
    assert emulator["environment"]["OPENAI_WEBHOOK_SECRET"] == secret
    # The emulator accepts only the key the other services send.
    key_variable = _option_envvar("emulator", "api_key")
    assert emulator["environment"][key_variable] == ingress["environment"]["OPENAI_API_KEY"]
    for name in ("worker", "runner"):
        assert (
            services[name]["environment"]["OPENAI_API_KEY"] == emulator["environment"][key_variable]
        )


def _option_envvar(command: str, param: str) -> str:
    group = switchboard_cli()
    found = group.get_command(typer.Context(group), command)
    assert found is not None
    [option] = [p for p in found.params if p.name == param]
    assert isinstance(option.envvar, str)
    return option.envvar


def test_without_the_demo_the_stack_talks_to_the_real_api() -> None:
    services = resolved_compose(PRODUCTION_ENV)
    assert "emulator" not in services
    for name in ("ingress", "worker", "runner"):
        environment = services[name]["environment"]
        assert environment["OPENAI_BASE_URL"] == "https://api.openai.com/v1", name
        assert environment["OPENAI_API_KEY"] == PRODUCTION_ENV["OPENAI_API_KEY"], name


@pytest.mark.parametrize("unset", sorted(PRODUCTION_ENV))
def test_compose_refuses_to_start_without_the_api_credentials(unset: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != unset}
    with pytest.raises(ComposeError, match=unset):
        resolved_compose(env)
    with pytest.raises(ComposeError, match=unset):
        resolved_compose({**env, unset: ""})


def test_interpolation_follows_compose_rules() -> None:
    node = {
        "a": "${X:-d}",
        "b": "${X-d}",
        "c": ["$X/$$X", "${Y:+set}", "${Y+set}"],
        "d": 3,
    }
    assert interpolate(node, {"X": "", "Y": ""}) == {
        "a": "d",
        "b": "",
        "c": ["/$X", "", "set"],
        "d": 3,
    }
    assert interpolate(node, {"X": "x", "Y": "y"})["c"] == ["x/$X", "set", "set"]
    with pytest.raises(ComposeError, match="Z"):
        interpolate("${Z:?need Z}", {"Z": ""})
    assert interpolate("${Z?need Z}", {"Z": ""}) == ""


def test_compose_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = load_yaml(COMPOSE)
    declared = set(compose.get("volumes") or {})
    mounted_files = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
                mounted_files += 1
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    assert mounted_files >= 4
